"""Compression at rest: bytes saved and speed of each form the archive can keep an object in.

For each data set (pydicom's test CT and MR, the test corpus's CT phantom, and the larger
samples of the ``pydicom-data`` package when installed) and each form (zstandard at levels 1,
3 and 19 in the seekable form the lifecycle writes; pixel packs with JPEG-LS, JPEG 2000 and
HTJ2K, vna.storage.pixelpack), it prints:

* stored bytes and the saving against the original and against zstd-3;
* encode MB/s: original bytes per CPU second writing the form (for packs: coding every
  frame, decoding it again to check it, and the zstd of the header);
* rebuild MB/s: original bytes per CPU second rebuilding the original from the form;
* retrieve MB/s: original bytes per CPU second through the archive's retrieve path
  (``Retriever.open`` on a filesystem store: read, rebuild, SHA-256 check as it streams),
  one instance at a time; and ``xN``: wall-clock MB/s with ``--parallel N`` instances at once.

CPU seconds (``time.process_time``, all threads of the process) rather than wall-clock make
the per-core figures hold on a machine shared with other work; the ``xN`` column is
wall-clock and moves with the machine's load.

A pixel pack that cannot carry an instance byte for byte (NotRepresentable) is counted and
that instance kept in zstd-3, as the lifecycle does.  Every rebuild is compared with the
original.  Usage::

    .venv/bin/python bench/compression.py [--quick] [--slices N] [--parallel N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lifecycle.compression import build_pack  # noqa: E402
from tests.factory import part10  # noqa: E402
from tests.phantom import smooth_ct_study  # noqa: E402
from vna.dicom.pixel_codecs import CodecError, htj2k_encoder_available  # noqa: E402
from vna.retrieve import Retriever, StoredInstance  # noqa: E402
from vna.storage import pixelpack, seekable  # noqa: E402
from vna.storage.filesystem import FilesystemStore  # noqa: E402

#: pydicom-data samples (MIT, the pydicom project's larger test files), when installed.
LARGER = {
    "MR2_UNCR.dcm": "MR 1024x1024 (pydicom-data)",
    "693_UNCR.dcm": "CT 512x512 (pydicom-data)",
    "RG1_UNCR.dcm": "radiograph 1955x1841 (pydicom-data)",
    "US1_UNCR.dcm": "ultrasound RGB (pydicom-data)",
    "MR-SIEMENS-DICOM-WithOverlays.dcm": "MR with overlay planes (pydicom-data)",
}


@dataclass
class Result:
    form: str
    stored: int = 0
    original: int = 0
    encode_s: float = 0.0
    rebuild_s: float = 0.0
    retrieve_s: float = 0.0
    retrieve_parallel_s: float = 0.0
    fallbacks: list[str] = field(default_factory=list)


def zstd_form(level: int) -> Callable[[bytes, str], bytes]:
    def encode(data: bytes, _ts: str) -> bytes:
        writer = seekable.SeekableWriter(level)
        return writer.feed(data) + writer.finish()

    return encode


def pack_form(codec: str) -> Callable[[bytes, str], bytes]:
    def encode(data: bytes, ts: str) -> bytes:
        return build_pack(data, ts, codec, 3)

    return encode


def rebuild(blob: bytes) -> bytes:
    if blob.startswith(pixelpack.MAGIC):
        return pixelpack.unpack(blob)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True)
    return reader.read()


def datasets(slices: int, quick: bool) -> dict[str, list[bytes]]:
    from pydicom.data import get_testdata_file

    out: dict[str, list[bytes]] = {}
    for name, label in (("CT_small.dcm", "CT 128x128 (pydicom)"), ("MR_small.dcm", "MR 64x64")):
        path = get_testdata_file(name)
        assert path is not None
        out[label] = [Path(path).read_bytes()]
    out[f"CT phantom 512x512 x {slices}"] = [
        part10(ds) for ds in smooth_ct_study(series=1, slices=slices, size=512)
    ]
    if not quick:
        for name, label in LARGER.items():
            try:
                path = get_testdata_file(name, download=False)
            except TypeError:  # older pydicom: no download flag
                path = None
            if path:
                out[label] = [Path(path).read_bytes()]
    return out


async def retrieve_mbps(
    blobs: list[tuple[bytes, bytes, str]], parallel: int
) -> tuple[float, float]:
    """Seconds to retrieve every instance through Retriever.open, one at a time and
    ``parallel`` at once."""
    with tempfile.TemporaryDirectory(prefix="vna-bench-") as tmp:
        store = FilesystemStore(Path(tmp))
        retriever = Retriever(None, store, read_only=True)  # type: ignore[arg-type]
        instances = []
        for i, (original, blob, compression) in enumerate(blobs):
            # The seekable zstd form is told by its key's suffix, as the lifecycle names it.
            key = f"sha256/bench/{i}" + (seekable.SEEKABLE_SUFFIX if compression == "zstd" else "")
            (Path(tmp) / "blob").write_bytes(blob)
            await store.put_file(key, Path(tmp) / "blob", sha256=hashlib.sha256(blob).hexdigest())
            instances.append(
                StoredInstance(
                    sop_uid=f"1.2.{i}",
                    sop_class_uid="",
                    transfer_syntax="",
                    study_uid="",
                    series_uid="",
                    object_key=key,
                    compression=compression,
                    tier="hot",
                    size=len(original),
                    sha256=hashlib.sha256(original).hexdigest(),
                )
            )

        async def one(inst: StoredInstance) -> None:
            async for _ in await retriever.open(inst):
                pass

        start = time.process_time()
        for inst in instances:
            await one(inst)
        serial = time.process_time() - start  # CPU seconds of the process (all its threads)
        slots = asyncio.Semaphore(parallel)

        async def limited(inst: StoredInstance) -> None:
            async with slots:
                await one(inst)

        start = time.perf_counter()
        await asyncio.gather(*(limited(i) for i in instances))
        return serial, time.perf_counter() - start  # wall-clock: what parallel decoding gains


def measure(
    files: list[bytes], form: str, encode: Callable[[bytes, str], bytes], parallel: int
) -> Result:
    result = Result(form)
    blobs: list[tuple[bytes, bytes, str]] = []
    compression = "zstd" if form.startswith("zstd") else form
    for data in files:
        ts = str(
            pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
        )
        start = time.process_time()
        try:
            blob = encode(data, ts)
            kind = compression
        except CodecError as exc:
            result.fallbacks.append(str(exc)[:90])
            blob = zstd_form(3)(data, ts)
            kind = "zstd"
        result.encode_s += time.process_time() - start
        start = time.process_time()
        back = rebuild(blob)
        result.rebuild_s += time.process_time() - start
        if back != data:
            raise SystemExit(f"{form}: the original does not rebuild byte for byte")
        result.stored += len(blob)
        result.original += len(data)
        blobs.append((data, blob, kind))
    result.retrieve_s, result.retrieve_parallel_s = asyncio.run(retrieve_mbps(blobs, parallel))
    return result


def mbps(n: int, seconds: float) -> str:
    return f"{n / 1e6 / seconds:8.1f}" if seconds > 0 else "       -"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small phantom, no pydicom-data")
    parser.add_argument("--slices", type=int, default=None, help="phantom slices (default 40)")
    parser.add_argument("--parallel", type=int, default=2, help="instances retrieved at once")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    slices = args.slices or (4 if args.quick else 40)
    forms: dict[str, Callable[[bytes, str], bytes]] = {
        "zstd-1": zstd_form(1),
        "zstd-3": zstd_form(3),
        "zstd-19": zstd_form(19),
        "jpeg-ls": pack_form("jpeg-ls"),
        "jpeg2000": pack_form("jpeg2000"),
    }
    if htj2k_encoder_available():
        forms["htj2k"] = pack_form("htj2k")
    else:
        print("htj2k: skipped (imagecodecs is not installed)")
    print(f"host: {platform.node()} {platform.machine()}, python {platform.python_version()}")
    report: dict[str, list[dict[str, object]]] = {}
    for label, files in datasets(slices, args.quick).items():
        size = sum(len(f) for f in files)
        print(f"\n{label}: {len(files)} file(s), {size / 1e6:.2f} MB")
        print(
            f"  {'form':<9} {'stored MB':>10} {'saved':>7} {'vs zstd-3':>9}"
            f" {'enc MB/s':>8} {'rebuild':>8} {'retrieve':>8} {'x' + str(args.parallel):>8}"
        )
        rows = []
        zstd3 = None
        for form, encode in forms.items():
            r = measure(files, form, encode, args.parallel)
            if form == "zstd-3":
                zstd3 = r.stored
            vs = f"{100 * (1 - r.stored / zstd3):8.1f}%" if zstd3 else "        -"
            print(
                f"  {form:<9} {r.stored / 1e6:10.3f} {100 * (1 - r.stored / r.original):6.1f}%"
                f" {vs} {mbps(r.original, r.encode_s)} {mbps(r.original, r.rebuild_s)}"
                f" {mbps(r.original, r.retrieve_s)} {mbps(r.original, r.retrieve_parallel_s)}"
            )
            for why in sorted(set(r.fallbacks)):
                print(f"      kept in zstd-3 ({r.fallbacks.count(why)}): {why}")
            rows.append(
                {
                    "form": form,
                    "original_bytes": r.original,
                    "stored_bytes": r.stored,
                    "encode_mbps": r.original / 1e6 / r.encode_s if r.encode_s else None,
                    "rebuild_mbps": r.original / 1e6 / r.rebuild_s if r.rebuild_s else None,
                    "retrieve_mbps": r.original / 1e6 / r.retrieve_s,
                    "retrieve_parallel_mbps": r.original / 1e6 / r.retrieve_parallel_s,
                    "fallbacks": r.fallbacks,
                }
            )
        report[label] = rows
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
