"""What was stored before the viewer work is brought up to it by the lifecycle (issue 17):
objects compressed before the seekable form are rewritten seekable by a sweep, audited, once;
instances stored before layouts were get theirs, so their metadata names every bulk value;
and layouts go when their instances are deleted (retention, rejection review)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
import zstandard
from pydicom.dataset import Dataset

from lifecycle import retention, status, viewer_upkeep
from lifecycle.engine import Engine
from lifecycle.worker import run_once
from tests.factory import ct_study, part10, split_multipart
from tests.integration.lifecycle_support import fetch, ingest, jobs, opened, with_lifecycle
from tests.integration.test_frames import NoWholeReads, get, instance_url, multiframe
from tests.security_support import serving
from vna.admin import rejections as admin_rejections
from vna.archive import Archive
from vna.config import RetentionRuleSettings, Settings
from vna.storage.base import content_key

pytestmark = pytest.mark.asyncio
TODAY = dt.date.today()


async def _layout_shas(archive: Archive) -> set[str]:
    return {r["sha256"] for r in await fetch(archive, "SELECT sha256 FROM object_layouts")}


async def _sha_of(archive: Archive, ds: Dataset) -> str:
    (row,) = await fetch(
        archive, "SELECT sha256 FROM instances WHERE sop_uid = $1", str(ds.SOPInstanceUID)
    )
    return str(row["sha256"])


async def _to_old_form(archive: Archive, ds: Dataset) -> str:
    """Put the instance back in the form objects compressed before the seekable form had: one
    zstandard frame under a ``.zst`` key."""
    sha = await _sha_of(archive, ds)
    old = zstandard.ZstdCompressor(write_checksum=True).compress(part10(ds))
    key = content_key(sha, ".zst")
    await archive.store.put_bytes(key, old, sha256=hashlib.sha256(old).hexdigest())
    async with archive.db.acquire() as conn:
        await conn.execute(
            "UPDATE instances SET object_key = $1, compression = 'zstd', stored_size = $2"
            " WHERE sha256 = $3",
            key,
            len(old),
            sha,
        )
    return key


async def test_old_compressed_objects_are_made_seekable_by_the_sweep_once_and_audited(
    archive_settings: Settings,
) -> None:
    settings = with_lifecycle(archive_settings, lifecycle={"delete_grace_seconds": 0})
    async with opened(settings) as archive:
        big = multiframe(frames=40, size=128)  # 1.3 MB: several seekable frames
        (small,) = ct_study(series=1, slices=1, size=64)
        await ingest(archive, [big, small])
        old_keys = {await _to_old_form(archive, ds) for ds in (big, small)}
        before = await status.collect(archive.db, settings, TODAY)
        assert before["viewer_upkeep"]["single_frame_objects"] == 2
        assert "2 objects compressed before the seekable form" in status.render_text(before)

        await run_once(archive)  # no retrieve asked: the sweep found them

        rows = await fetch(archive, "SELECT sop_uid, object_key FROM instances ORDER BY id")
        assert all(r["object_key"].endswith(".szst") for r in rows), rows
        audited = await fetch(
            archive, "SELECT sop_uid, detail FROM audit WHERE action = 'object-reformat'"
        )
        assert {r["sop_uid"] for r in audited} == {
            str(big.SOPInstanceUID),
            str(small.SOPInstanceUID),
        }
        assert {r["detail"]["from"] for r in audited} == old_keys
        after = await status.collect(archive.db, settings, TODAY)
        assert after["viewer_upkeep"]["single_frame_objects"] == 0

        # Idempotent: nothing is left to queue, nothing more is audited.
        again = await viewer_upkeep.sweep(Engine(archive))
        assert (again.recompressions_queued, again.layouts_queued) == (0, 0)
        await run_once(archive)
        assert (
            len(await fetch(archive, "SELECT 1 FROM audit WHERE action = 'object-reformat'")) == 2
        )
        assert len(await jobs(archive, "recompress")) == 2

        # Frames of the converted object are ranged reads, never the whole object.
        frame_bytes = 128 * 128 * 2
        async with serving(archive) as root:
            with NoWholeReads(archive.store):
                status_code, body, headers = await get(f"{instance_url(root, big)}/frames/33,2")
                assert status_code == 200
                assert split_multipart(body, headers["Content-Type"]) == [
                    big.PixelData[32 * frame_bytes : 33 * frame_bytes],
                    big.PixelData[frame_bytes : 2 * frame_bytes],
                ]


def _with_document(ds: Dataset) -> bytes:
    document = bytes(range(256)) * 40
    ds.EncapsulatedDocument = document
    return document


async def test_instances_stored_before_layouts_get_them_and_their_metadata_names_bulk_data(
    archive: Archive,
) -> None:
    ds = multiframe(frames=6, size=16)
    document = _with_document(ds)
    await ingest(archive, [ds])
    sha = await _sha_of(archive, ds)
    # As an instance stored before migration 0130: no layout, listed by migration 0211.
    async with archive.db.acquire() as conn:
        await conn.execute("DELETE FROM object_layouts")
        await conn.execute("INSERT INTO layout_backlog (instance_fk) SELECT id FROM instances")
    fresh = await status.collect(archive.db, archive.settings, TODAY)
    assert fresh["viewer_upkeep"]["layouts_missing"] == 1

    async with serving(archive) as root:
        meta_url = f"{instance_url(root, ds)}/metadata"
        status_code, body, _ = await get(meta_url, accept="application/dicom+json")
        assert status_code == 200
        assert "BulkDataURI" not in json.loads(body)[0].get("00420011", {})

        await run_once(archive)

        assert sha in await _layout_shas(archive)
        assert await fetch(archive, "SELECT 1 FROM layout_backlog") == []
        done = await status.collect(archive.db, archive.settings, TODAY)
        assert done["viewer_upkeep"]["layouts_missing"] == 0
        # Upkeep is not a retrieve: no access time for tiering to see.
        await archive.retriever.flush_access_times()
        (row,) = await fetch(archive, "SELECT last_accessed_at FROM instances")
        assert row["last_accessed_at"] is None

        status_code, body, _ = await get(meta_url, accept="application/dicom+json")
        (doc,) = json.loads(body)
        uri = doc["00420011"]["BulkDataURI"]
        with NoWholeReads(archive.store):  # a fresh reader: the layout comes from the catalogue
            archive.retriever._layouts.clear()
            status_code, body, _ = await get(uri, accept="application/octet-stream")
            assert (status_code, body) == (200, document)
            status_code, body, headers = await get(f"{instance_url(root, ds)}/frames/6")
            assert status_code == 200
            assert split_multipart(body, headers["Content-Type"]) == [ds.PixelData[5 * 512 :]]

    # Listed instances deleted meanwhile leave nothing behind (ON DELETE CASCADE).
    async with archive.db.acquire() as conn:
        await conn.execute("INSERT INTO layout_backlog (instance_fk) SELECT id FROM instances")
        await conn.execute("DELETE FROM studies")
    assert await fetch(archive, "SELECT 1 FROM layout_backlog") == []


async def test_layouts_go_with_instances_deleted_by_retention_and_by_rejection_review(
    archive_settings: Settings,
) -> None:
    rules = (RetentionRuleSettings(name="short", retain_years=1),)
    old = TODAY.replace(year=TODAY.year - 5).strftime("%Y%m%d")
    settings = with_lifecycle(archive_settings, retention_rules=rules)
    async with opened(settings) as archive:
        doomed = ct_study(patient_id="GONE", series=1, slices=2, size=16, study_date=old)
        kept = ct_study(
            patient_id="KEPT", series=2, slices=2, size=16, study_date=TODAY.strftime("%Y%m%d")
        )
        await ingest(archive, [*doomed, *kept])
        everything = [*doomed, *kept]
        for ds in everything:  # each one's layout recorded, as a retrieve would
            (instance,) = await archive.retriever.find(
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
            )
            await archive.retriever.record_layout(instance)
        shas = {str(ds.SOPInstanceUID): await _sha_of(archive, ds) for ds in everything}
        assert set(shas.values()) <= await _layout_shas(archive)

        # One series of the kept study rejected: a review deletes its instances.
        withdrawn = [ds for ds in kept if ds.SeriesInstanceUID == kept[0].SeriesInstanceUID]
        staying = [ds for ds in kept if ds.SeriesInstanceUID != kept[0].SeriesInstanceUID]
        await admin_rejections.reject(
            archive,
            str(kept[0].StudyInstanceUID),
            str(kept[0].SeriesInstanceUID),
            "113039^DCM",
            actor="test",
        )
        review = await retention.create_review(archive.db, rules, TODAY, "records")
        assert [i["study_uid"] for i in review.due] == [str(doomed[0].StudyInstanceUID)]
        report = await retention.approve(archive, rules, review.id, "Jane Roe")
        assert report.deleted == [str(doomed[0].StudyInstanceUID)]

        remaining = await fetch(archive, "SELECT sop_uid FROM instances")
        assert {r["sop_uid"] for r in remaining} & set(shas) == {
            str(ds.SOPInstanceUID) for ds in staying
        }
        left = await _layout_shas(archive)
        gone = {shas[str(ds.SOPInstanceUID)] for ds in (*doomed, *withdrawn)}
        assert not left & gone, "layouts of deleted instances left behind"
        assert {shas[str(ds.SOPInstanceUID)] for ds in staying} <= left
