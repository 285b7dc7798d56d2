"""WADO-RS frames and bulk data over real HTTP (PS3.18 10.4, 8.6): the frames and values a
viewer gets are the stored ones, read by ranges of the object, also when it is compressed at
rest; errors name what is wrong."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import numpy as np
import pydicom
import pytest
import zstandard
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import unpack_bits
from pydicom.uid import JPEG2000Lossless

from lifecycle.worker import run_once
from tests.conftest import STORE_KINDS
from tests.factory import ct_study, split_multipart
from tests.integration.lifecycle_support import fetch, ingest, jobs, opened, with_lifecycle
from tests.security_support import serving
from vna.archive import Archive
from vna.config import Settings
from vna.storage.base import ObjectStore, content_key

pytestmark = pytest.mark.asyncio
OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def multiframe(frames: int, size: int, bits: int = 16) -> Dataset:
    (ds,) = ct_study(series=1, slices=1, size=size)
    rng = np.random.default_rng(frames)
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    if bits == 1:
        pixels = rng.integers(0, 2, (frames, size, size), dtype=np.uint8)
        packed = np.packbits(pixels.ravel(), bitorder="little").tobytes()
        ds.PixelData = packed + b"\x00" * (len(packed) % 2)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = rng.integers(0, 4096, (frames, size, size), dtype=np.uint16).tobytes()
    return ds


async def get(url: str, accept: str = OHIF, **headers: str) -> tuple[int, bytes, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Accept": accept, **headers}) as resp,
    ):
        return resp.status, await resp.read(), resp.headers


def instance_url(root: str, ds: Dataset) -> str:
    return (
        f"{root}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


class NoWholeReads:
    """Makes every whole-object read of a store fail: what still works reads ranges."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.saved = store.iter_chunks

    def __enter__(self) -> None:
        def refuse(key: str, chunk_size: int = 1 << 20) -> Any:
            raise AssertionError(f"whole object {key} read")

        self.store.iter_chunks = refuse  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        self.store.iter_chunks = self.saved  # type: ignore[method-assign]


@pytest.mark.parametrize("store_kind", STORE_KINDS)
async def test_native_frames_any_order_repeats_single_part_and_errors(archive: Archive) -> None:
    ds = multiframe(frames=12, size=33)  # odd size: 2178-byte frames
    await ingest(archive, [ds])
    frame_bytes = 33 * 33 * 2
    pixels = ds.PixelData
    expected = {n: pixels[(n - 1) * frame_bytes : n * frame_bytes] for n in range(1, 13)}
    async with serving(archive) as root:
        url = instance_url(root, ds)
        with NoWholeReads(archive.store):  # the layout was recorded at ingest
            status, body, headers = await get(f"{url}/frames/12,1,7,1")
            assert status == 200, body
            assert headers["Content-Type"].startswith("multipart/related")
            assert split_multipart(body, headers["Content-Type"]) == [
                expected[12],
                expected[1],
                expected[7],
                expected[1],
            ]
            assert b"transfer-syntax=1.2.840.10008.1.2.1" in body

            status, body, headers = await get(f"{url}/frames/5", accept="application/octet-stream")
            assert (status, body) == (200, expected[5])
            assert headers["Content-Type"].startswith("application/octet-stream")

        status, body, _ = await get(f"{url}/frames/3,13")
        assert status == 404 and b"frame 13" in body and b"12 frame" in body
        status, body, _ = await get(f"{url}/frames/0")
        assert status == 400
        # JPEG baseline is lossy: the archive makes none from lossless frames.
        status, body, _ = await get(f"{url}/frames/1", accept="multipart/related; type=image/jpeg")
        assert status == 406 and b"application/octet-stream" in body and b"4.50" in body
        status, body, _ = await get(f"{url}/frames/1,2", accept="application/octet-stream")
        assert status == 406 and b"single-part" in body
        status, _, _ = await get(url.replace(ds.SOPInstanceUID, "1.2.3.4") + "/frames/1")
        assert status == 404


async def test_one_bit_frames(archive: Archive) -> None:
    ds = multiframe(frames=9, size=5, bits=1)  # 25 bits a frame
    await ingest(archive, [ds])
    reference = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_part10(ds))).pixel_array
    async with serving(archive) as root:
        status, body, headers = await get(f"{instance_url(root, ds)}/frames/1,2,9")
        assert status == 200
        for n, frame in zip((1, 2, 9), split_multipart(body, headers["Content-Type"]), strict=True):
            assert len(frame) == 4
            assert (unpack_bits(frame)[:25].reshape(5, 5) == reference[n - 1]).all()


def _part10(ds: Dataset) -> bytes:
    from tests.factory import part10

    return part10(ds)


async def test_encapsulated_frames_in_their_own_media_type(archive: Archive) -> None:
    # Ten JPEG 2000 frames in two fragments each, no offset table (PS3.5 A.4): the frames are
    # told apart by their end-of-codestream markers.
    ds = multiframe(frames=10, size=8)
    codestreams = [b"\xff\x4f\xff\x51" + bytes([n]) * (101 + n) + b"\xff\xd9" for n in range(10)]
    ds.PixelData = encapsulate(codestreams, fragments_per_frame=2, has_bot=False)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    await ingest(archive, [ds])
    expected = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    syntax = str(ds.file_meta.TransferSyntaxUID)
    async with serving(archive) as root:
        url = instance_url(root, ds)
        with NoWholeReads(archive.store):
            status, body, headers = await get(
                f"{url}/frames/10,2", accept='multipart/related; type="image/jp2"'
            )
            assert status == 200
            assert split_multipart(body, headers["Content-Type"]) == [expected[9], expected[1]]
            assert f"Content-Type: image/jp2; transfer-syntax={syntax}".encode() in body
            status, body, _ = await get(f"{url}/frames/3")  # OHIF: stored syntax, labelled
            assert status == 200 and f"transfer-syntax={syntax}".encode() in body
        # Decoded on request (issue 18); these made-up codestreams do not decode: a 500 that
        # says so, never other bytes (tests/integration/test_transcoding.py decodes real ones).
        status, body, _ = await get(
            f"{url}/frames/1", accept='multipart/related; type="application/octet-stream"'
        )
        assert status == 500 and b"could not be decoded" in body


@pytest.mark.parametrize("store_kind", STORE_KINDS)
async def test_frames_of_objects_compressed_at_rest(archive_settings: Settings) -> None:
    settings = with_lifecycle(
        archive_settings,
        compression={"level": 3, "min_size": 4096},
        lifecycle={"delete_grace_seconds": 0},
    )
    async with opened(settings) as archive:
        ds = multiframe(frames=40, size=128)  # 1.3 MB: several seekable frames
        await ingest(archive, [ds])
        await run_once(archive)
        (row,) = await fetch(archive, "SELECT object_key, compression FROM instances")
        assert row["compression"] == "zstd" and row["object_key"].endswith(".szst")
        frame_bytes = 128 * 128 * 2
        expected = [ds.PixelData[i * frame_bytes : (i + 1) * frame_bytes] for i in range(40)]
        async with serving(archive) as root:
            url = instance_url(root, ds)
            with NoWholeReads(archive.store):
                status, body, headers = await get(f"{url}/frames/40,1,20,21")
                assert status == 200
                assert split_multipart(body, headers["Content-Type"]) == [
                    expected[39],
                    expected[0],
                    expected[19],
                    expected[20],
                ]

            # An object compressed before the seekable form (one zstd frame): still served,
            # and its rewrite queued once; the lifecycle then makes it seekable.
            data = _part10(ds)
            sha = (await fetch(archive, "SELECT sha256 FROM instances"))[0]["sha256"]
            old = zstandard.ZstdCompressor(write_checksum=True).compress(data)
            import hashlib

            old_key = content_key(sha, ".zst")
            await archive.store.put_bytes(old_key, old, sha256=hashlib.sha256(old).hexdigest())
            async with archive.db.acquire() as conn:
                await conn.execute("UPDATE instances SET object_key = $1", old_key)
            for _ in range(2):
                status, body, headers = await get(f"{url}/frames/33")
                assert status == 200
                assert split_multipart(body, headers["Content-Type"]) == [expected[32]]
            assert len(await jobs(archive, "recompress")) == 1
            await run_once(archive)
            (row,) = await fetch(archive, "SELECT object_key FROM instances")
            assert row["object_key"] == content_key(sha, ".szst")
            with NoWholeReads(archive.store):
                status, body, headers = await get(f"{url}/frames/2")
                assert split_multipart(body, headers["Content-Type"]) == [expected[1]]


async def test_metadata_bulk_data_uris_resolve_to_the_values(archive: Archive) -> None:
    ds = multiframe(frames=3, size=16)
    document = bytes(range(256)) * 400  # 100 KiB
    ds.EncapsulatedDocument = document
    wave = Dataset()
    wave.WaveformBitsAllocated = 16
    wave.WaveformData = b"\x01\x02" * 1500
    ds.WaveformSequence = [wave]
    await ingest(archive, [ds])
    (single,) = ct_study(series=1, slices=1, size=16)  # a single-frame instance
    await ingest(archive, [single])
    async with serving(archive) as root:
        for level in ("", f"/series/{ds.SeriesInstanceUID}", instance_url(root, ds)):
            url = (
                level + "/metadata"
                if level.startswith("http")
                else f"{root}/dicom-web/studies/{ds.StudyInstanceUID}{level}/metadata"
            )
            status, body, _ = await get(url, accept="application/dicom+json")
            assert status == 200
            (doc,) = json.loads(body)
            assert doc["7FE00010"]["BulkDataURI"].endswith("/bulk/7FE00010")
            assert doc["00420011"]["vr"] == "OB"
        uri = doc["00420011"]["BulkDataURI"]
        status, body, headers = await get(uri, accept="application/octet-stream")
        assert (status, body) == (200, document)
        status, body, headers = await get(
            uri, accept="application/octet-stream", Range="bytes=1000-1099"
        )
        assert (status, body) == (206, document[1000:1100])
        assert headers["Content-Range"] == f"bytes 1000-1099/{len(document)}"
        status, body, headers = await get(uri, accept="application/octet-stream", Range="bytes=-10")
        assert (status, body) == (206, document[-10:])
        status, _, _ = await get(uri, accept="application/octet-stream", Range="bytes=999999-")
        assert status == 416
        status, body, headers = await get(
            uri, accept="multipart/related; type=application/octet-stream"
        )
        assert split_multipart(body, headers["Content-Type"]) == [document]

        wave_uri = doc["54000100"]["Value"][0]["54001010"]["BulkDataURI"]
        status, body, headers = await get(wave_uri, accept="application/octet-stream")
        assert (status, body) == (200, wave.WaveformData)

        # Pixel Data's URI answers its frames.
        status, body, headers = await get(doc["7FE00010"]["BulkDataURI"])
        assert split_multipart(body, headers["Content-Type"]) == [
            ds.PixelData[i * 512 : (i + 1) * 512] for i in range(3)
        ]
        # A single-frame instance: its Pixel Data URI resolves too.
        status, body, _ = await get(
            f"{root}/dicom-web/studies/{single.StudyInstanceUID}/metadata",
            accept="application/dicom+json",
        )
        (doc,) = json.loads(body)
        status, body, headers = await get(doc["7FE00010"]["BulkDataURI"])
        assert split_multipart(body, headers["Content-Type"]) == [single.PixelData]
        status, _, _ = await get(f"{instance_url(root, ds)}/bulk/00100010")
        assert status == 404


async def test_a_single_frame_objects_first_frame_reads_it_once_and_records_its_layout(
    archive: Archive,
) -> None:
    # A CT slice stored before layouts were recorded at ingest (its row removed here): its
    # first frame reads the object whole once (for the layout and the frame alike), and the
    # layout is written in a batch.
    (ds,) = ct_study(series=1, slices=1, size=32)
    await ingest(archive, [ds])
    assert len(await fetch(archive, "SELECT layout FROM object_layouts")) == 1
    async with archive.db.acquire() as conn:
        await conn.execute("DELETE FROM object_layouts")
    store = archive.store
    reads: list[str] = []
    ranged, streamed = store.read_range, store.iter_chunks

    async def counted_range(key: str, start: int, length: int) -> bytes:
        reads.append(f"range {start}+{length}")
        return await ranged(key, start, length)

    def counted_stream(key: str, chunk_size: int = 1 << 20) -> Any:
        reads.append("whole")
        return streamed(key, chunk_size)

    store.read_range = counted_range  # type: ignore[method-assign]
    store.iter_chunks = counted_stream  # type: ignore[method-assign]
    try:
        async with serving(archive) as root:
            status, body, headers = await get(f"{instance_url(root, ds)}/frames/1")
            assert status == 200
            assert split_multipart(body, headers["Content-Type"]) == [ds.PixelData]
            assert len(reads) == 1, reads
            await archive.retriever.flush_layouts()
            rows = await fetch(archive, "SELECT layout FROM object_layouts")
            assert len(rows) == 1 and rows[0]["layout"]["pixels"]["frames"] == 1
            # The next request reads the frame's range only (checked against the CRC-32 the
            # layout recorded for it).
            reads.clear()
            status, body, headers = await get(f"{instance_url(root, ds)}/frames/1")
            assert status == 200 and reads == [
                f"range {len(_part10(ds)) - len(ds.PixelData)}+{len(ds.PixelData)}"
            ]
            assert split_multipart(body, headers["Content-Type"]) == [ds.PixelData]
    finally:
        store.read_range, store.iter_chunks = ranged, streamed  # type: ignore[method-assign]
