"""Instance Availability (0008,0056) in QIDO-RS answers, from the catalogue's tiers and
restores: ONLINE (hot, warm, restored), NEARLINE (a cold tier readable without a restore: the
filesystem store's cold root, S3 GLACIER_IR), OFFLINE (S3 GLACIER and the like until
restored); a study or series reports its least available instance (PS3.4 C.4.1.1.3.2)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from lifecycle.worker import run_once
from tests.integration.lifecycle_support import (
    OfflineColdStore,
    fetch,
    ingest,
    instances_of,
    jobs,
    move_to_tier,
    opened,
    use_store,
    with_lifecycle,
)
from tests.integration.test_lifecycle_tiering import serve
from tests.phantom import smooth_ct_study
from vna.archive import Archive
from vna.catalog.queries import q
from vna.config import Settings
from vna.errors import OfflineError

pytestmark = pytest.mark.asyncio
AVAILABILITY = "00080056"
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def study(patient: str = "PT", series: int = 1):
    return smooth_ct_study(patient_id=patient, series=series, slices=2, size=32)


async def qido(base: str, path: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/{path}") as resp:
        assert resp.status in (200, 204), await resp.text()
        return list(await resp.json()) if resp.status == 200 else []


async def availability(base: str, path: str) -> dict[str, str]:
    """Instance Availability of each match, by its unique key at the level of ``path``."""
    level_key = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}
    key = level_key[path.split("?")[0].rsplit("/", 1)[-1]]
    return {m[key]["Value"][0]: m[AVAILABILITY]["Value"][0] for m in await qido(base, path)}


async def move_series(archive: Archive, series_uid: str, tier: str) -> None:
    rows = await fetch(
        archive,
        "SELECT i.id, i.object_key FROM instances i JOIN series se ON se.id = i.series_fk"
        " WHERE se.series_uid = $1",
        series_uid,
    )
    for row in rows:
        await archive.store.set_tier(row["object_key"], tier)
        async with archive.db.acquire() as conn:
            await conn.execute(q("tier_record"), row["id"], tier, row["object_key"])


async def test_filesystem_tiers_online_and_nearline_least_available_wins(
    archive_settings: Settings,
) -> None:
    settings = with_lifecycle(archive_settings, compression={"level": 0})
    async with opened(settings) as archive:
        mixed, plain = study("P1", series=2), study("P2")
        await ingest(archive, mixed)
        await ingest(archive, plain)
        first, second = mixed[0].SeriesInstanceUID, mixed[-1].SeriesInstanceUID
        uid = mixed[0].StudyInstanceUID
        runner, base = await serve(archive)
        try:
            assert set((await availability(base, "studies")).values()) == {"ONLINE"}
            await move_series(archive, second, "warm")
            assert (await availability(base, "studies"))[uid] == "ONLINE"
            await move_series(archive, first, "cold")
            assert await availability(base, "studies") == {
                uid: "NEARLINE",
                plain[0].StudyInstanceUID: "ONLINE",
            }
            assert await availability(base, f"studies/{uid}/series") == {
                first: "NEARLINE",
                second: "ONLINE",
            }
            by_instance = await availability(base, f"studies/{uid}/instances")
            assert by_instance == {
                str(ds.SOPInstanceUID): "NEARLINE" if ds.SeriesInstanceUID == first else "ONLINE"
                for ds in mixed
            }
            # Series searched across studies report their own availability too.
            across = await availability(base, "series?PatientID=P1")
            assert across[first] == "NEARLINE"
            # Asked for by name, still computed (not matched): same answer.
            named = await availability(base, "studies?includefield=InstanceAvailability")
            assert named[uid] == "NEARLINE"
        finally:
            await runner.cleanup()


async def test_offline_until_restored_then_online(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, compression={"level": 0})
    async with opened(settings) as archive:
        use_store(archive, OfflineColdStore(archive.settings.data_dir / "objects"))
        cold = study("P1")
        await ingest(archive, cold)
        uid = cold[0].StudyInstanceUID
        await move_to_tier(archive, uid, "cold")
        runner, base = await serve(archive)
        try:
            assert await availability(base, "studies") == {uid: "OFFLINE"}
            assert set((await availability(base, f"studies/{uid}/instances")).values()) == {
                "OFFLINE"
            }
            # One instance asked for: its restore is queued, and done by the lifecycle worker.
            (one, other) = await archive.retriever.find(uid)
            async with aiohttp.ClientSession() as http:
                url = f"{base}/studies/{uid}/series/{one.series_uid}/instances/{one.sop_uid}"
                async with http.get(url, headers={"Accept": ACCEPT}) as resp:
                    assert resp.status == 503
            assert [j["payload"]["object_key"] for j in await jobs(archive, "restore")] == [
                one.object_key
            ]
            summary = await run_once(archive)
            assert summary.done["restore"] == 1
            (row,) = [r for r in await instances_of(archive, uid) if r["sop_uid"] == one.sop_uid]
            assert row["restored_until"] is not None
            assert await availability(base, f"studies/{uid}/instances") == {
                one.sop_uid: "ONLINE",
                other.sop_uid: "OFFLINE",
            }
            # The study is as available as its least available instance.
            assert await availability(base, "studies") == {uid: "OFFLINE"}
            # Expired restores count no more.
            await fetch(archive, "UPDATE instances SET restored_until = now() - interval '1 s'")
            assert (await availability(base, f"studies/{uid}/instances"))[one.sop_uid] == "OFFLINE"
        finally:
            await runner.cleanup()


async def test_s3_glacier_ir_is_nearline_glacier_offline(
    archive_settings: Settings, s3_url: str
) -> None:
    for cold_class, expected in (("GLACIER_IR", "NEARLINE"), ("GLACIER", "OFFLINE")):
        settings = with_lifecycle(
            archive_settings,
            storage_url=f"{s3_url}&cold_class={cold_class}",
            compression={"level": 0},
        )
        async with opened(settings) as archive:
            s = study(f"P-{cold_class}")
            await ingest(archive, s)
            uid = s[0].StudyInstanceUID
            await move_to_tier(archive, uid, "cold")
            runner, base = await serve(archive)
            try:
                assert (await availability(base, "studies"))[uid] == expected
                if expected == "OFFLINE":
                    # A retrieve queues the restores; once done, the study is ONLINE.
                    for instance in await archive.retriever.find(uid):
                        with pytest.raises(OfflineError, match="restore"):
                            await archive.retriever.read(instance)
                    assert (await run_once(archive)).done["restore"] == 2
                    assert (await availability(base, "studies"))[uid] == "ONLINE"
            finally:
                await runner.cleanup()
