"""Background compression: stored bytes drop on uncompressed CT, retrieves stay bit-exact
(DICOMweb and the retriever), compressed transfer syntaxes are left alone, the original object
goes after the grace period, and corruption is caught, never served."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pydicom
import pytest

from lifecycle.worker import run_once
from tests.factory import split_multipart
from tests.integration.lifecycle_support import (
    fetch,
    ingest,
    instances_of,
    jobs,
    opened,
    with_lifecycle,
)
from tests.phantom import smooth_ct_study
from vna.config import Settings
from vna.errors import StorageError
from vna.retrieve import StoredInstance

pytestmark = pytest.mark.asyncio
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


async def wado(base: str, study_uid: str) -> tuple[int, list[bytes], dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/studies/{study_uid}", headers={"Accept": ACCEPT}) as resp,
    ):
        body = await resp.read()
        parts = split_multipart(body, resp.headers["Content-Type"]) if resp.status == 200 else []
        return resp.status, parts, dict(resp.headers)


async def serve(archive):
    from aiohttp import web

    from tests.conftest import free_port
    from vna.gateway.web import create_app

    runner = web.AppRunner(create_app(archive))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/dicom-web"


async def test_compression_saves_bytes_and_retrieves_bit_exact(
    archive_settings: Settings, pydicom_test_dir: Path
) -> None:
    settings = with_lifecycle(
        archive_settings,
        compression={"level": 3, "min_size": 4096},
        lifecycle={"delete_grace_seconds": 0},
    )
    async with opened(settings) as archive:
        ct = smooth_ct_study(series=2, slices=4, size=256)
        sent = await ingest(archive, ct)
        # Already compressed pixel data (JPEG 2000 lossless, RLE): left alone.
        jpeg = pydicom.dcmread(pydicom_test_dir / "JPEG2000.dcm")
        rle = pydicom.dcmread(pydicom_test_dir / "MR_small_RLE.dcm")
        sent |= await ingest(archive, [jpeg, rle])
        before = {r["sop_uid"]: r for r in await fetch(archive, "SELECT * FROM instances")}

        summary = await run_once(archive)
        assert summary.done["instance-stored"] == 10
        after = {r["sop_uid"]: r for r in await fetch(archive, "SELECT * FROM instances")}
        for ds in ct:
            row = after[ds.SOPInstanceUID]
            assert row["compression"] == "zstd"
            assert row["object_key"] == before[ds.SOPInstanceUID]["object_key"] + ".szst"
            assert row["stored_size"] < row["size"] * 0.6
            assert row["sha256"] == before[ds.SOPInstanceUID]["sha256"]
        for ds in (jpeg, rle):
            assert after[ds.SOPInstanceUID]["compression"] == "none"
            assert after[ds.SOPInstanceUID]["object_key"] == before[ds.SOPInstanceUID]["object_key"]
        total = sum(r["size"] for r in after.values())
        stored = sum(r["stored_size"] for r in after.values())
        assert stored < 0.6 * total

        # The originals went once the grace period (0 here) was over; the new objects are there.
        for ds in ct:
            assert await archive.store.stat(before[ds.SOPInstanceUID]["object_key"]) is None
            assert await archive.store.stat(after[ds.SOPInstanceUID]["object_key"]) is not None
        assert {j["state"] for j in await jobs(archive, "delete-object")} == {"done"}

        runner, base = await serve(archive)
        try:
            status, parts, _ = await wado(base, ct[0].StudyInstanceUID)
            assert status == 200
            assert sorted(parts) == sorted(sent[ds.SOPInstanceUID] for ds in ct)
            status, parts, _ = await wado(base, jpeg.StudyInstanceUID)
            assert status == 200 and sent[jpeg.SOPInstanceUID] in parts
        finally:
            await runner.cleanup()

        # Running the jobs again changes nothing (idempotent).
        async with archive.db.acquire() as conn:
            await conn.execute("UPDATE jobs SET state = 'queued' WHERE kind = 'instance-stored'")
        await run_once(archive)
        assert {
            r["sop_uid"]: r["object_key"] for r in await fetch(archive, "SELECT * FROM instances")
        } == {k: v["object_key"] for k, v in after.items()}

        # Retrieves are counted as accesses, written in one batch.
        await archive.retriever.flush_access_times()
        touched = await instances_of(archive, ct[0].StudyInstanceUID)
        assert all(r["last_accessed_at"] is not None for r in touched)


async def test_incompressible_instances_stay_as_received(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, compression={"level": 1, "min_saving_percent": 30})
    async with opened(settings) as archive:
        # Uniform 12-bit noise in 16-bit words: zstandard saves about a quarter, not 30 %.
        from tests.factory import ct_study

        noisy = ct_study(series=1, slices=2, size=128)
        await ingest(archive, noisy)
        await run_once(archive)
        rows = await fetch(archive, "SELECT compression, object_key FROM instances")
        assert {r["compression"] for r in rows} == {"none"}
        assert not any(r["object_key"].endswith((".zst", ".szst")) for r in rows)


async def test_corrupt_compressed_object_is_refused_not_served(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, compression={"level": 3})
    async with opened(settings) as archive:
        ct = smooth_ct_study(series=1, slices=1, size=128)
        await ingest(archive, ct)
        await run_once(archive)
        (row,) = await instances_of(archive, ct[0].StudyInstanceUID)
        path = archive.store.path_of(row["object_key"])  # type: ignore[attr-defined]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        (instance,) = await archive.retriever.find(ct[0].StudyInstanceUID)
        assert isinstance(instance, StoredInstance)
        with pytest.raises(StorageError):
            await archive.retriever.read(instance)


async def test_a_leftover_compressed_object_is_replaced(archive_settings: Settings) -> None:
    """An earlier attempt (another level, a crash) left other bytes under the compressed key."""
    import hashlib

    settings = with_lifecycle(archive_settings, compression={"level": 3})
    async with opened(settings) as archive:
        ct = smooth_ct_study(series=1, slices=1, size=128)
        sent = await ingest(archive, ct)
        (row,) = await instances_of(archive, ct[0].StudyInstanceUID)
        junk = b"left over by an earlier attempt"
        await archive.store.put_bytes(
            row["object_key"] + ".szst", junk, sha256=hashlib.sha256(junk).hexdigest()
        )
        await run_once(archive)
        (instance,) = await archive.retriever.find(ct[0].StudyInstanceUID)
        assert instance.compression == "zstd"
        assert await archive.retriever.read(instance) == sent[instance.sop_uid]
