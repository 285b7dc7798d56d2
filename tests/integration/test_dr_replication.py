"""Replication to secondary stores: every instance is copied and verified (S3 and filesystem
replicas), the lag falls to zero, compressed objects are copied again under their new key,
approved deletions reach the replicas, and the sweep queues what the jobs missed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import pytest

from lifecycle import retention
from lifecycle.dr import replication
from lifecycle.worker import run_once
from tests.integration.lifecycle_support import fetch, ingest, jobs, opened, with_lifecycle
from tests.phantom import smooth_ct_study
from vna.archive import Archive
from vna.config import ReplicaSettings, RetentionRuleSettings, Settings
from vna.storage.factory import open_store

pytestmark = pytest.mark.asyncio


def with_replicas(settings: Settings, **urls: str) -> Settings:
    return dataclasses.replace(
        settings,
        replicas=tuple(ReplicaSettings(name, url) for name, url in urls.items()),
    )


async def replica_rows(archive: Archive, store: str) -> dict[str, dict]:
    rows = await fetch(archive, "SELECT * FROM replicas WHERE store = $1", store)
    return {r["object_key"]: r for r in rows}


def metric(text: str, name: str, replica: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{replica="{replica}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {replica} not in /metrics")


async def test_every_instance_copied_and_verified_lag_falls_to_zero(
    archive_settings: Settings, s3_url: str, tmp_path: Path
) -> None:
    settings = with_replicas(
        with_lifecycle(archive_settings, compression={"level": 3, "min_size": 4096}),
        dr=s3_url,
        nas=(tmp_path / "nas-objects").as_uri(),
    )
    async with opened(settings) as archive:
        study = smooth_ct_study(series=2, slices=3, size=96)
        await ingest(archive, study)
        await archive.refresh_gauges()
        text = archive.metrics.render().decode()
        assert metric(text, "vna_replica_backlog_instances", "dr") == 6
        assert metric(text, "vna_replica_lag_seconds", "nas") >= 0

        summary = await run_once(archive)
        assert summary.dead == {}
        assert summary.done[replication.REPLICATE] == 12  # 6 instances x 2 replicas

        instances = await fetch(archive, "SELECT * FROM instances ORDER BY id")
        assert all(i["compression"] == "zstd" for i in instances)
        for name in ("dr", "nas"):
            store = archive.sites.get(name)  # type: ignore[union-attr]
            rows = await replica_rows(archive, name)
            assert set(rows) == {i["object_key"] for i in instances}
            for i in instances:
                data = await store.get_bytes(i["object_key"])
                assert data == await archive.store.get_bytes(i["object_key"])
                assert rows[i["object_key"]]["sha256"] == hashlib.sha256(data).hexdigest()
                assert rows[i["object_key"]]["verified_at"] is not None
        await archive.refresh_gauges()
        text = archive.metrics.render().decode()
        for name in ("dr", "nas"):
            assert metric(text, "vna_replica_backlog_instances", name) == 0
            assert metric(text, "vna_replica_lag_seconds", name) == 0
            assert metric(text, "vna_replica_instances", name) == 6


async def test_rewritten_objects_copied_again_and_deletions_propagate(
    archive_settings: Settings, tmp_path: Path
) -> None:
    replica_root = tmp_path / "replica"
    base = with_replicas(archive_settings, dr=replica_root.as_uri())
    # First without compression: the replica gets the original objects.
    settings = with_lifecycle(
        base,
        compression={"level": 0},
        lifecycle={"delete_grace_seconds": 0},
        retention_rules=(RetentionRuleSettings(name="short", retain_years=1),),
    )
    async with opened(settings) as archive:
        study = smooth_ct_study(series=1, slices=3, size=96, study_date="20000101")
        await ingest(archive, study)
        await run_once(archive)
        originals = {i["object_key"] for i in await fetch(archive, "SELECT * FROM instances")}
        assert set(await replica_rows(archive, "dr")) == originals

    # Compression switched on later rewrites each object under a new key: copied again, and
    # the originals leave the replica with the active store's.
    settings = with_lifecycle(settings, compression={"level": 3, "min_size": 4096})
    async with opened(settings) as archive:
        from lifecycle.compression import compress_instance
        from lifecycle.engine import Engine

        for row in await fetch(archive, "SELECT id FROM instances"):
            result = await compress_instance(Engine(archive), row["id"])
            assert result.compressed
        await run_once(archive)  # delete-object jobs, then replica deletions; sweep copies
        await run_once(archive)
        current = {i["object_key"] for i in await fetch(archive, "SELECT * FROM instances")}
        assert current.isdisjoint(originals)
        assert set(await replica_rows(archive, "dr")) == current
        replica = await open_store(replica_root.as_uri(), name="dr")
        on_replica = {k async for k in replica.iter_keys()}
        assert on_replica == current

        # An approved retention deletion empties the replica too.
        review = await retention.create_review(
            archive.db, settings.retention_rules, dt.date.today(), "test"
        )
        report = await retention.approve(archive, settings.retention_rules, review.id, "test")
        assert len(report.deleted) == 1
        await run_once(archive)
        assert {k async for k in replica.iter_keys()} == set()
        assert await replica_rows(archive, "dr") == {}
        await replica.close()


async def test_sweep_queues_copies_that_went_missing(
    archive_settings: Settings, tmp_path: Path
) -> None:
    replica_root = tmp_path / "replica"
    settings = with_replicas(archive_settings, dr=replica_root.as_uri())
    async with opened(settings) as archive:
        await ingest(archive, smooth_ct_study(series=1, slices=2, size=64))
        await run_once(archive)
        keys = sorted(await replica_rows(archive, "dr"))
        assert len(keys) == 2
        # A copy lost behind the archive's back and its record with it (a restored backup of
        # the catalogue, a replica added later): the sweep queues it again.
        replica = archive.sites.get("dr")  # type: ignore[union-attr]
        await replica.delete(keys[0])
        async with archive.db.acquire() as conn:
            await conn.execute("DELETE FROM replicas WHERE object_key = $1", keys[0])
            await conn.execute("DELETE FROM jobs")
        summary = await run_once(archive)
        assert summary.done[replication.REPLICATE] == 1
        assert await replica.get_bytes(keys[0]) == await archive.store.get_bytes(keys[0])
        assert [j["state"] for j in await jobs(archive, replication.REPLICATE)] == ["done"]
