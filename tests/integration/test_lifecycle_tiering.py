"""Tiering on both stores: objects move to the right class (S3, moto server) or root
(filesystem); an offline (GLACIER) instance answers 503 with Retry-After and queues one restore;
after the restore the retrieve is bit-exact."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import aiohttp
import boto3
import pytest

from lifecycle import status
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
from tests.phantom import dicom_date, smooth_ct_study
from vna.archive import Archive
from vna.config import Settings, TieringRuleSettings
from vna.errors import OfflineError
from vna.storage.base import ObjectInfo
from vna.storage.filesystem import FilesystemStore

pytestmark = pytest.mark.asyncio
TODAY = dt.date.today()
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
RULES = (
    TieringRuleSettings(tier="warm", name="idle", min_days_since_access=30),
    TieringRuleSettings(tier="cold", name="old", min_study_age_days=730),
)


def study(days_old: int, patient: str = "PT"):
    return smooth_ct_study(
        patient_id=patient,
        series=1,
        slices=2,
        size=64,
        study_date=dicom_date(TODAY - dt.timedelta(days=days_old)),
    )


async def serve(archive: Archive):
    from aiohttp import web

    from tests.conftest import free_port
    from vna.gateway.web import create_app

    runner = web.AppRunner(create_app(archive))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/dicom-web"


async def wado(base: str, study_uid: str) -> tuple[int, list[bytes], dict[str, str], str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/studies/{study_uid}", headers={"Accept": ACCEPT}) as resp,
    ):
        body = await resp.read()
        parts = split_multipart(body, resp.headers["Content-Type"]) if resp.status == 200 else []
        return resp.status, parts, dict(resp.headers), body.decode(errors="replace")


async def test_filesystem_tiers_are_roots(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, tiering_rules=RULES, compression={"level": 0})
    async with opened(settings) as archive:
        old, recent = study(1000), study(5)
        sent = await ingest(archive, old) | await ingest(archive, recent)
        await run_once(archive)
        hot_root = archive.settings.data_dir / "objects"
        cold_root = archive.settings.data_dir / "objects-cold"
        for row in await instances_of(archive, old[0].StudyInstanceUID):
            assert row["tier"] == "cold"
            assert (cold_root / row["object_key"]).is_file()
            assert not (hot_root / row["object_key"]).exists()
        assert {r["tier"] for r in await instances_of(archive, recent[0].StudyInstanceUID)} == {
            "hot"
        }

        # Forty days on, nobody has read the recent study: warm.
        later = TODAY + dt.timedelta(days=40)
        await run_once(archive, as_of=later)
        warm_root = archive.settings.data_dir / "objects-warm"
        for row in await instances_of(archive, recent[0].StudyInstanceUID):
            assert row["tier"] == "warm" and (warm_root / row["object_key"]).is_file()

        # Every filesystem tier is online: retrieves work as before, bit-exact.
        for instance in await archive.retriever.find(old[0].StudyInstanceUID):
            assert await archive.retriever.read(instance) == sent[instance.sop_uid]
        data = await status.collect(archive.db, settings, TODAY)
        assert data["tiers"]["cold"]["instances"] == 2 and data["tiers"]["warm"]["instances"] == 2
        assert "cold" in status.render_text(data)


def s3_settings(settings: Settings, s3_url: str, **sections) -> Settings:
    return with_lifecycle(settings, storage_url=s3_url, **sections)


def storage_classes(s3_url: str, keys: list[str]) -> dict[str, tuple[str, str]]:
    """(StorageClass, Restore header) of each key, straight from the endpoint."""
    bucket = s3_url.split("://")[1].split("?")[0]
    endpoint = s3_url.split("endpoint_url=")[1].split("&")[0]
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    out = {}
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        out[key] = (head.get("StorageClass", "STANDARD"), head.get("Restore", ""))
    return out


async def test_s3_classes_glacier_503_restore_then_bit_exact(
    archive_settings: Settings, s3_url: str
) -> None:
    plain = s3_settings(archive_settings, s3_url, compression={"level": 3})
    async with opened(plain) as archive:
        old, middle, recent = study(1000, "P1"), study(60, "P2"), study(1, "P3")
        sent: dict[str, bytes] = {}
        for s in (old, middle, recent):
            sent |= await ingest(archive, s)
        await run_once(archive)  # compression first (no tiering rules yet)
        assert {r["compression"] for r in await fetch(archive, "SELECT * FROM instances")} == {
            "zstd"
        }

    by_age = (
        TieringRuleSettings(tier="warm", min_study_age_days=30),
        TieringRuleSettings(tier="cold", min_study_age_days=730),
    )
    tiered = dataclasses.replace(plain, tiering_rules=by_age)
    async with opened(tiered) as archive:
        await run_once(archive)
        keys = {
            name: [r["object_key"] for r in await instances_of(archive, s[0].StudyInstanceUID)]
            for name, s in (("old", old), ("middle", middle), ("recent", recent))
        }
        classes = storage_classes(s3_url, [k for ks in keys.values() for k in ks])
        assert {classes[k][0] for k in keys["old"]} == {"GLACIER"}
        assert {classes[k][0] for k in keys["middle"]} == {"STANDARD_IA"}
        assert {classes[k][0] for k in keys["recent"]} == {"STANDARD"}
        assert {r["tier"] for r in await instances_of(archive, old[0].StudyInstanceUID)} == {"cold"}

        runner, base = await serve(archive)
        try:
            status_code, _, headers, body = await wado(base, old[0].StudyInstanceUID)
            assert status_code == 503
            assert int(headers["Retry-After"]) == 5 * 3600  # GLACIER, Standard retrieval
            assert "restore" in body
            await wado(base, old[0].StudyInstanceUID)  # asked twice: still one restore each
            restores = await jobs(archive, "restore")
            assert sorted(j["payload"]["object_key"] for j in restores) == sorted(keys["old"])
            assert {j["state"] for j in restores} == {"queued"}

            # STANDARD_IA is online: served at once.
            status_code, parts, _, _ = await wado(base, middle[0].StudyInstanceUID)
            assert status_code == 200
            assert sorted(parts) == sorted(sent[ds.SOPInstanceUID] for ds in middle)

            summary = await run_once(archive)
            assert summary.done["restore"] == 2
            for storage_class, restore in storage_classes(s3_url, keys["old"]).values():
                assert storage_class == "GLACIER" and 'ongoing-request="false"' in restore

            status_code, parts, _, _ = await wado(base, old[0].StudyInstanceUID)
            assert status_code == 200
            assert sorted(parts) == sorted(sent[ds.SOPInstanceUID] for ds in old)
        finally:
            await runner.cleanup()


class TapeStore(FilesystemStore):
    """A filesystem store whose cold root is offline, like a tape library: a restore takes
    two polls.  Lets the in-progress path run, which moto does not emulate (its restores
    complete at once)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.polls: dict[str, int] = {}

    @property
    def offline_tiers(self) -> frozenset[str]:
        return frozenset({"cold"})

    def restore_seconds(self, tier: str) -> int:
        return 600

    def _online(self, key: str, tier: str | None) -> bool:
        return tier != "cold" or self.polls.get(key) == 0

    async def stat(self, key: str) -> ObjectInfo | None:
        info = await super().stat(key)
        if info is None:
            return None
        return dataclasses.replace(
            info,
            available=self._online(key, info.tier),
            restore_in_progress=self.polls.get(key, 0) > 0,
        )

    async def iter_chunks(self, key: str, chunk_size: int = 1 << 20):
        info = await self.stat(key)
        if info is not None and not info.available:
            raise OfflineError(f"{key} is on tape", retry_after_seconds=600)
        async for chunk in super().iter_chunks(key, chunk_size):
            yield chunk

    async def restore(self, key: str, days: int) -> ObjectInfo:
        self.polls[key] = 2 if key not in self.polls else max(self.polls[key] - 1, 0)
        info = await self.stat(key)
        assert info is not None
        return info


async def test_restore_in_progress_is_polled_without_using_attempts(
    archive_settings: Settings,
) -> None:
    settings = with_lifecycle(archive_settings, tiering_rules=RULES, compression={"level": 0})
    async with opened(settings) as archive:
        tape = TapeStore(archive.settings.data_dir / "objects")
        archive.store = archive.retriever.store = archive.ingester.store = tape
        old = study(1000)
        sent = await ingest(archive, old)
        await run_once(archive)
        (instance, _) = await archive.retriever.find(old[0].StudyInstanceUID)
        with pytest.raises(OfflineError) as raised:
            await archive.retriever.open(instance)
        assert raised.value.retry_after_seconds == 600
        (job,) = await jobs(archive, "restore")
        assert job["payload"]["object_key"] == instance.object_key

        for expected_polls in (2, 1):
            summary = await run_once(archive)
            assert summary.rescheduled["restore"] == 1
            assert tape.polls[instance.object_key] == expected_polls
            (job,) = await jobs(archive, "restore")
            assert (job["state"], job["attempts"]) == ("queued", 0)
            with pytest.raises(OfflineError):
                await archive.retriever.read(instance)  # queued already: not twice
            assert len(await jobs(archive, "restore")) == 1
            await fetch(archive, "UPDATE jobs SET run_after = now() WHERE kind = 'restore'")
        summary = await run_once(archive)
        assert summary.done["restore"] == 1
        assert await archive.retriever.read(instance) == sent[instance.sop_uid]
