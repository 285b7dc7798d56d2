"""What a viewer feels, side by side with Orthanc (DICOMweb plugin) on the same corpus.

Measures, on each server in turn (fresh data directory, same requests):

- **open study to first frame**: the requests OHIF makes before it can draw (QIDO-RS study,
  series, series metadata, then frame 1 of the first instance), wall time, p50 over rounds;
- **frames/s**: every frame of a CT series (one frame per slice) fetched as OHIF fetches
  them (``multipart/related; type=application/octet-stream; transfer-syntax=*``) by
  ``--clients`` clients at once;
- **/rendered JPEG images/s**: every slice of the series as ``image/jpeg``, ``--clients`` at
  once, each image asked for once (no renderer cache hit on our side);
- **one frame of a multi-frame**: random frames of a ``--frames``-frame instance, one at a
  time, warm, p50 and p95.

A measurement, not a test: it fails only when a server answers wrongly.  Run it with
``make bench-viewer`` (``ARGS="--quick"`` for a smoke run); the figures and ratios print as a
table and go to ``bench/results/viewer-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import REPO, Server, running, start_orthanc, start_ours

FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Multi-frame Grayscale Word Secondary Capture (PS3.4 B.5): a plain multi-frame container.
MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"


# --- corpus ------------------------------------------------------------------------------------


def _base(study: str, series: str, sop_class: str, patient: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName = patient, "BENCH^VIEWER"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240101", "120000", "BV1"
    ds.Modality = "CT" if sop_class == CT_IMAGE else "OT"
    ds.SeriesNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def _phantom(size: int, index: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = ((x - 0.5) / 0.4) ** 2 + ((y - 0.5) / 0.3) ** 2 <= 1
    image = np.zeros((size, size), dtype=np.float32)
    image[body] = 1064 + 30 * np.sin(index / 9 + x[body] * 6)
    image += rng.normal(0, 6, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 4095).astype("<u2")


def ct_series(slices: int, size: int) -> list[Dataset]:
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(1)
    out = []
    for i in range(slices):
        ds = _base(study, series, CT_IMAGE, "BENCHCT")
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.Rows = ds.Columns = size
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = _phantom(size, i, rng).tobytes()
        out.append(ds)
    return out


def multiframe(frames: int, size: int) -> Dataset:
    ds = _base(generate_uid(), generate_uid(), MULTIFRAME_WORD_SC, "BENCHMF")
    rng = np.random.default_rng(2)
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = frames
    ds.PixelData = b"".join(_phantom(size, i, rng).tobytes() for i in range(frames))
    return ds


def part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# --- requests ----------------------------------------------------------------------------------


async def stow(http: aiohttp.ClientSession, root: str, parts: list[bytes]) -> None:
    boundary = "benchviewerboundary"
    body = bytearray()
    for p in parts:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += p + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    for attempt in (1, 2):
        try:
            async with http.post(f"{root}/studies", data=bytes(body), headers=headers) as r:
                text = await r.text()
                if r.status != 200:
                    raise RuntimeError(f"STOW-RS answered {r.status}: {text[:300]}")
                return
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            # (Untimed set-up.)  A keep-alive connection the server closed while idle is
            # found out only by sending on it (a broken pipe): once more, on a new one.
            if attempt == 2:
                raise


async def fetch(http: aiohttp.ClientSession, url: str, accept: str) -> bytes:
    async with http.get(url, headers={"Accept": accept}) as r:
        body = await r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {url} answered {r.status}: {body[:200]!r}")
        return body


def instance_url(root: str, ds: Dataset) -> str:
    return (
        f"{root}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


async def open_to_first_frame(http: aiohttp.ClientSession, root: str, ds: Dataset) -> float:
    """OHIF's path to its first image: study search, series search, series metadata, frame."""
    started = time.perf_counter()
    study = ds.StudyInstanceUID
    await fetch(http, f"{root}/studies?StudyInstanceUID={study}", "application/dicom+json")
    await fetch(http, f"{root}/studies/{study}/series", "application/dicom+json")
    meta = await fetch(
        http,
        f"{root}/studies/{study}/series/{ds.SeriesInstanceUID}/metadata",
        "application/dicom+json",
    )
    first = json.loads(meta)[0]["00080018"]["Value"][0]
    await fetch(
        http,
        f"{root}/studies/{study}/series/{ds.SeriesInstanceUID}/instances/{first}/frames/1",
        FRAME_ACCEPT,
    )
    return time.perf_counter() - started


async def parallel(
    urls: list[str], accept: str, clients: int, http: aiohttp.ClientSession
) -> float:
    """Seconds to fetch every URL once with ``clients`` requests in flight."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for u in urls:
        queue.put_nowait(u)

    async def worker() -> None:
        while not queue.empty():
            await fetch(http, queue.get_nowait(), accept)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(server: Server, args: argparse.Namespace, ct: list[Dataset], mf: Dataset):
    root = server.dicomweb
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=args.clients + 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        for i in range(0, len(ct), 20):
            await stow(http, root, [part10(ds) for ds in ct[i : i + 20]])
        await stow(http, root, [part10(mf)])
        result: dict[str, Any] = {}

        opens = [await open_to_first_frame(http, root, ct[0]) for _ in range(args.rounds)]
        result["first_frame_ms_p50"] = statistics.median(opens) * 1000

        urls = [f"{instance_url(root, ds)}/frames/1" for ds in ct]
        await parallel(urls[:10], FRAME_ACCEPT, args.clients, http)  # warm the connections
        seconds = await parallel(urls, FRAME_ACCEPT, args.clients, http)
        result["frames_per_s"] = len(urls) / seconds

        rendered = [f"{instance_url(root, ds)}/rendered" for ds in ct]
        seconds = await parallel(rendered, "image/jpeg", args.clients, http)
        result["rendered_per_s"] = len(rendered) / seconds

        rng = random.Random(3)
        base = instance_url(root, mf)
        await fetch(http, f"{base}/frames/1", FRAME_ACCEPT)
        times = []
        for _ in range(args.samples):
            n = rng.randint(1, args.frames)
            started = time.perf_counter()
            await fetch(http, f"{base}/frames/{n}", FRAME_ACCEPT)
            times.append(time.perf_counter() - started)
        result["multiframe_frame_ms_p50"] = percentile(times, 0.5) * 1000
        result["multiframe_frame_ms_p95"] = percentile(times, 0.95) * 1000
        return result


ROWS: list[tuple[str, str, Callable[[float, float], float]]] = [
    ("open study to first frame (ms, p50)", "first_frame_ms_p50", lambda o, t: t / o),
    ("frames/s, CT series, all clients", "frames_per_s", lambda o, t: o / t),
    ("/rendered JPEG images/s", "rendered_per_s", lambda o, t: o / t),
    ("one frame of a multi-frame (ms, p50)", "multiframe_frame_ms_p50", lambda o, t: t / o),
    ("one frame of a multi-frame (ms, p95)", "multiframe_frame_ms_p95", lambda o, t: t / o),
]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'':42} {'ours':>10} {'Orthanc':>10} {'ours better by':>15}"]
    for label, key, better in ROWS:
        ours = results.get("ours", {}).get(key)
        theirs = results.get("orthanc", {}).get(key)
        ratio = f"{better(ours, theirs):.2f}x" if ours and theirs else "-"
        lines.append(f"{label:42} {_fmt(ours):>10} {_fmt(theirs):>10} {ratio:>15}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=300, help="CT series length (default 300)")
    p.add_argument("--size", type=int, default=512, help="rows and columns (default 512)")
    p.add_argument("--frames", type=int, default=300, help="frames of the multi-frame")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5, help="open-study timings (default 5)")
    p.add_argument("--samples", type=int, default=200, help="multi-frame frame requests")
    p.add_argument("--only", choices=("ours", "orthanc"))
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of both sides, taking turns to go first (default 1); medians and each"
        " run's ratios are printed",
    )
    p.add_argument("--quick", action="store_true", help="30 slices, 30 frames, 256 pixels")
    args = p.parse_args(argv)
    if args.quick:
        args.slices, args.frames, args.size, args.samples = 30, 30, 256, 50
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"corpus: CT {args.slices} x {args.size}^2, multi-frame {args.frames} frames", flush=True)
    ct = ct_series(args.slices, args.size)
    mf = multiframe(args.frames, args.size)
    runs: list[dict[str, dict[str, float]]] = []
    sides = [("ours", start_ours), ("orthanc", start_orthanc)]
    for run in range(max(1, args.repeat)):
        # The sides take turns to go first: the machine's drift falls on both alike.
        order = sides if run % 2 == 0 else sides[::-1]
        results: dict[str, dict[str, float]] = {}
        for name, start in order:
            if args.only and name != args.only:
                continue
            print(f"run {run + 1}, {name}: starting", flush=True)
            with running(start) as server:
                results[name] = asyncio.run(measure(server, args, ct, mf))
            print(f"{name}: {json.dumps({k: round(v, 2) for k, v in results[name].items()})}")
        runs.append(results)
        if args.repeat > 1:
            print(f"run {run + 1}:\n{table(results)}", flush=True)
    results = {
        name: {key: statistics.median(r[name][key] for r in runs) for key in runs[0][name]}
        for name in runs[0]
    }
    if args.repeat > 1:
        print("median of the runs (each figure on its own):")
    print(table(results))
    out = REPO / "bench" / "results" / f"viewer-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results, "runs": runs}, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
