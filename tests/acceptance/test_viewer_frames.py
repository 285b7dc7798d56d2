"""`vna serve` as a viewer sees it: dicomweb-client's retrieve_instance_frames and
retrieve_bulkdata return exactly what pydicom reads from the stored file, for every pydicom
test file the archive accepts; multi-frame native (1-bit too) and encapsulated frames with and
without offset tables; frames of an object compressed at rest; CORS for another origin."""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels import unpack_bits
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import JPEG2000Lossless

from tests.acceptance.conftest import ArchiveProcess
from tests.factory import ct_study, part10, stow_body

PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
ANY_SYNTAX = (("application/octet-stream", "*"),)


def _stow(server: ArchiveProcess, data: bytes) -> int:
    body, content_type = stow_body([data])
    r = requests.post(
        f"{server.url}/studies", data=body, headers={"Content-Type": content_type}, timeout=60
    )
    return r.status_code


def _expected_frames(ds: Dataset) -> list[bytes] | None:
    """The frames of a data set as pydicom reads them: encapsulated by PS3.5 A.4, native cut
    by frame size, little endian (None: 1-bit, compared through the pixel values)."""
    tag = next(t for t in PIXEL_TAGS if t in ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    elem = ds[tag]
    if elem.is_undefined_length:
        return list(generate_frames(elem.value, number_of_frames=frames))
    # pydicom's own reckoning of the pixel data's length (YBR_FULL_422 included: two samples
    # per pixel, PS3.3 C.7.6.3.1.2), not the archive's.
    if ds.BitsAllocated == 1:
        return None
    size = get_expected_length(ds, "bytes") // frames
    value = bytes(elem.value)
    if not ds.original_encoding[1] and elem.VR in ("OW", "OF", "OD"):
        width = {"OW": 2, "OF": 4, "OD": 8}[elem.VR]
        value = np.frombuffer(value, dtype=f">u{width}").astype(f"<u{width}").tobytes()
    frames = min(frames, len(value) // size)
    return [value[i * size : (i + 1) * size] for i in range(frames)]


def _value_at(ds: Dataset, path: list[str]) -> Any:
    node: Any = ds
    for i in range(0, len(path) - 1, 2):
        node = node[int(path[i], 16)].value[int(path[i + 1])]
    return node[int(path[-1], 16)].value


def _bulk_uris(doc: dict[str, Any]) -> Iterator[str]:
    for element in doc.values():
        if "BulkDataURI" in element:
            yield element["BulkDataURI"]
        if element.get("vr") == "SQ":
            for item in element.get("Value", []):
                yield from _bulk_uris(item)


def test_frames_and_bulk_data_of_every_accepted_pydicom_test_file(archive_process):
    client = DICOMwebClient(archive_process.url)
    accepted = checked_frames = checked_bulk = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in get_testdata_files("*.dcm"):
            try:
                ds = pydicom.dcmread(path)
                data = Path(path).read_bytes()
            except Exception:
                continue
            if not any(t in ds for t in PIXEL_TAGS) or "SOPInstanceUID" not in ds:
                continue
            if _stow(archive_process, data) != 200:
                continue  # refused with a reason (the STOW-RS tests cover which)
            accepted += 1
            uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            stored = client.retrieve_instance(*uids)  # what the archive keeps
            expected = _expected_frames(stored)
            count = int(stored.get("NumberOfFrames", 1) or 1)
            if expected is not None:
                count = len(expected)
            numbers = list(range(1, count + 1))
            if not numbers:  # Pixel Data shorter than one frame: there is no frame 1
                r = requests.get(
                    f"{archive_process.url}/studies/{uids[0]}/series/{uids[1]}"
                    f"/instances/{uids[2]}/frames/1",
                    timeout=30,
                )
                assert r.status_code == 404 and "frame 1" in r.text, path
                checked_frames += 1
                continue
            got = client.retrieve_instance_frames(*uids, frame_numbers=numbers)
            if expected is None:  # 1-bit: compare the pixels
                pixels = stored.pixel_array.reshape(count, -1)
                for frame, want in zip(got, pixels, strict=True):
                    assert (unpack_bits(frame)[: want.size] == want).all(), path
            else:
                assert got == expected, path
            checked_frames += 1

            metadata = client.retrieve_instance_metadata(*uids)
            for uri in _bulk_uris(metadata):
                # dicomweb-client sends ``Host`` without the port (web.py sets it to the bare
                # host name), and the archive builds its URIs from Host, as a reverse proxy
                # needs: put back the port this test server listens on.
                assert uri.startswith("http://127.0.0.1/dicom-web/"), uri
                uri = uri.replace("http://127.0.0.1/", archive_process.base + "/", 1)
                tag_path = uri.split("/bulk/", 1)[1].split("/")
                values = client.retrieve_bulkdata(uri)
                if int(tag_path[-1], 16) in PIXEL_TAGS and len(tag_path) == 1:
                    if expected is not None:
                        assert values == expected, (path, uri)
                else:
                    assert values == [bytes(_value_at(stored, tag_path))], (path, uri)
                checked_bulk += 1
    # pydicom ships about 80 files; those with pixel data the archive stores (the others are
    # refused with a reason: broken, no SOP Instance UID, duplicates of one UID...).
    assert accepted >= 30 and checked_frames == accepted and checked_bulk >= accepted - 1


def _multiframe(frames: int, size: int, bits: int) -> Dataset:
    (ds,) = ct_study(series=1, slices=1, size=size)
    rng = np.random.default_rng(frames * bits)
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, min(bits, 12), min(bits, 12) - 1
    if bits == 1:
        pixels = rng.integers(0, 2, (frames, size, size), dtype=np.uint8)
        packed = np.packbits(pixels.ravel(), bitorder="little").tobytes()
        ds.PixelData = packed + b"\x00" * (len(packed) % 2)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = rng.integers(0, 4096, (frames, size, size), dtype=np.uint16).tobytes()
    return ds


def test_multiframe_native_one_bit_and_encapsulated_frames(archive_process):
    client = DICOMwebClient(archive_process.url)

    def uids(ds: Dataset) -> tuple[str, str, str]:
        return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID

    native = _multiframe(frames=30, size=31, bits=16)
    one_bit = _multiframe(frames=11, size=7, bits=1)  # 49 bits a frame
    client.store_instances([native, one_bit])
    size = 31 * 31 * 2
    got = client.retrieve_instance_frames(*uids(native), frame_numbers=[30, 1, 15, 1])
    assert got == [native.PixelData[(n - 1) * size : n * size] for n in (30, 1, 15, 1)]
    pixels = pydicom.dcmread(pydicom.filebase.DicomBytesIO(part10(one_bit))).pixel_array
    got = client.retrieve_instance_frames(*uids(one_bit), frame_numbers=[11, 2])
    for frame, n in zip(got, (11, 2), strict=True):
        assert (unpack_bits(frame)[:49].reshape(7, 7) == pixels[n - 1]).all()

    codestreams = [b"\xff\x4f\xff\x51" + bytes([n]) * (300 + 7 * n) + b"\xff\xd9" for n in range(8)]
    for variant in ("basic", "none", "extended"):
        ds = _multiframe(frames=8, size=8, bits=16)
        if variant == "extended":
            ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = (
                encapsulate_extended(codestreams)
            )
        else:
            ds.PixelData = encapsulate(
                codestreams, fragments_per_frame=3, has_bot=variant == "basic"
            )
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        assert _stow(archive_process, part10(ds)) == 200
        got = client.retrieve_instance_frames(
            *uids(ds), frame_numbers=[8, 3], media_types=(("image/jp2", JPEG2000Lossless),)
        )
        assert [g.rstrip(b"\x00") for g in got] == [codestreams[7], codestreams[2]], variant


def test_frames_of_an_object_compressed_at_rest(archive_process):
    client = DICOMwebClient(archive_process.url)
    ds = _multiframe(frames=60, size=96, bits=16)  # 1.1 MB: several seekable frames
    client.store_instances([ds])
    objects = archive_process.data_dir / "objects"
    deadline = time.monotonic() + 120
    while not any(objects.rglob("*.szst")) and time.monotonic() < deadline:
        time.sleep(0.5)  # the lifecycle engine compresses at its own pace
    assert any(objects.rglob("*.szst")), archive_process.log()
    # The original is kept for the grace period; take it away so that only the compressed
    # object can answer.
    for original in objects.rglob("*"):
        if original.is_file() and original.suffix not in (".szst", ".json"):
            original.unlink()
    size = 96 * 96 * 2
    numbers = [60, 1, 31, 2, 59]
    got = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=numbers,
        media_types=ANY_SYNTAX,
    )
    assert got == [ds.PixelData[(n - 1) * size : n * size] for n in numbers]


@pytest.fixture
def cors_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[ArchiveProcess]:
    monkeypatch.setenv("VNA_HTTP_CORS_ORIGINS", "https://viewer.example.org")
    root = Path(tempfile.mkdtemp(prefix="vna-accept-"))
    server = ArchiveProcess(root / "data")
    try:
        server.start()
        yield server
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def test_cors_preflight_for_a_viewer_on_another_origin(cors_process):
    (ds,) = ct_study(series=1, slices=1, size=16)
    assert _stow(cors_process, part10(ds)) == 200
    frames = (
        f"{cors_process.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/1"
    )
    r = requests.options(
        frames,
        headers={
            "Origin": "https://viewer.example.org",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
        timeout=10,
    )
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
    r = requests.get(
        frames,
        headers={
            "Origin": "https://viewer.example.org",
            "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*",
        },
        timeout=10,
    )
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://viewer.example.org"
    r = requests.options(
        frames,
        headers={"Origin": "https://other.example.org", "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers


SOURCES_CONFIG = """
[[sources]]
name = "H1"
issuer_of_patient_id = "HOSP1"

[[sources]]
name = "H2"
issuer_of_patient_id = "HOSP2"
"""


@pytest.fixture
def sources_process() -> Iterator[ArchiveProcess]:
    root = Path(tempfile.mkdtemp(prefix="vna-accept-"))
    config = root / "vna.toml"
    config.write_text(SOURCES_CONFIG)
    server = ArchiveProcess(root / "data", config=config)
    try:
        server.start()
        yield server
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def _token(server: ArchiveProcess, name: str, *options: str) -> str:
    import subprocess

    from tests.acceptance.conftest import VNA

    done = subprocess.run(
        [str(VNA), "--config", str(server.config), "tokens", "create", name, *options],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_reader_restricted_to_a_source_gets_404_for_the_others(sources_process):
    server = sources_process
    h1 = _token(server, "h1", "--role", "source", "--source", "H1")
    h2 = _token(server, "h2", "--role", "source", "--source", "H2")
    viewer = _token(server, "viewer", "--role", "reader", "--read-sources", "H1")
    studies = {}
    for name, token in (("H1", h1), ("H2", h2)):
        ds = _multiframe(frames=3, size=8, bits=16)
        ds.EncapsulatedDocument = bytes(range(256)) * 8  # 2 KiB: bulk data
        DICOMwebClient(server.url, headers={"Authorization": f"Bearer {token}"}).store_instances(
            [ds]
        )
        studies[name] = ds

    def get(path: str, accept: str) -> requests.Response:
        return requests.get(
            path,
            headers={"Authorization": f"Bearer {viewer}", "Accept": accept},
            timeout=30,
        )

    for name, status in (("H1", 200), ("H2", 404)):
        ds = studies[name]
        inst = (
            f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        wado = (
            f"{server.base}/wado?requestType=WADO&studyUID={ds.StudyInstanceUID}"
            f"&seriesUID={ds.SeriesInstanceUID}&objectUID={ds.SOPInstanceUID}"
            "&contentType=application/dicom"
        )
        for url, accept in (
            (f"{inst}/frames/2", "multipart/related; type=application/octet-stream"),
            (f"{inst}/bulk/00420011", "application/octet-stream"),
            (f"{inst}/bulk/7FE00010", "multipart/related; type=application/octet-stream"),
            (wado, "*/*"),
        ):
            assert get(url, accept).status_code == status, (name, url)
    # Without a token: 401, whatever the study.
    assert requests.get(f"{inst}/frames/1", timeout=30).status_code == 401
