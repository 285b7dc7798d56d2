"""Disaster recovery as an infrastructure team drills it: `vna dr status` shows backlog and RPO,
a drill with the primary store gone serves every instance bit-exact from an S3 replica and
reports RPO/RTO and injected defects, reads fall back to the replica by themselves, and a
failover, ingest during it, and failback lose nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import aiohttp
import boto3
import pytest

from lifecycle.dr import drill, failover
from lifecycle.dr import status as dr_status
from lifecycle.worker import run_once
from tests.factory import split_multipart
from tests.integration.lifecycle_support import fetch, ingest, opened, with_lifecycle
from tests.phantom import smooth_ct_study
from vna.archive import Archive
from vna.cli import main
from vna.config import ReplicaSettings, Settings
from vna.storage.filesystem import FilesystemStore

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def with_replica(settings: Settings, url: str, name: str = "dr") -> Settings:
    return dataclasses.replace(settings, replicas=(ReplicaSettings(name, url),))


def primary_root(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "objects"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def all_instances(archive: Archive) -> dict[str, bytes]:
    rows = await fetch(
        archive,
        "SELECT st.study_uid FROM studies st ORDER BY st.id",
    )
    out: dict[str, bytes] = {}
    for row in rows:
        for instance in await archive.retriever.find(row["study_uid"]):
            out[instance.sop_uid] = await archive.retriever.read(instance)
    return out


# --- status and drill (S3 replica, through the command line) ------------------------------------


def test_status_and_drill_with_primary_gone_then_injected_defects(
    archive_settings: Settings, s3_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = with_replica(
        with_lifecycle(archive_settings, compression={"level": 3, "min_size": 4096}), s3_url
    )
    config = tmp_path / "vna.toml"
    config.write_text(
        f'data_dir = "{settings.data_dir}"\ndatabase_url = "{settings.database_url}"\n'
        f"[compression]\nlevel = 3\nmin_size = 4096\n"
        f'[[replicas]]\nname = "dr"\nstorage_url = "{s3_url}"\n'
    )

    def vna(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--config", str(config), *args])
        return code, capsys.readouterr().out

    async def load() -> dict[str, bytes]:
        async with opened(settings) as archive:
            sent = await ingest(archive, smooth_ct_study(series=2, slices=2, size=96))
            sent |= await ingest(archive, smooth_ct_study(patient_id="P2", series=1, slices=2))
            await run_once(archive)  # compress, then replicate
            # Received after the last replication: what a loss now would lose.
            late = await ingest(archive, smooth_ct_study(patient_id="LATE", series=1, slices=1))
            return sent | late

    assert len(asyncio.run(load())) == 7
    late_count = 1

    code, out = vna("dr", "status")
    assert code == 0
    assert "replica dr" in out
    assert "replicated     6 instances" in out
    assert f"backlog        {late_count} instances" in out
    assert "RPO now" in out and "oldest unreplicated instance received" in out
    code, out = vna("dr", "status", "--format", "json")
    status = json.loads(out)
    (replica,) = status["replicas"]
    assert replica["backlog_instances"] == late_count
    assert replica["rpo_seconds"] > 0
    assert status["active_store"] == "primary"

    # The primary store is gone: the drill must not need it.
    shutil.move(primary_root(settings), tmp_path / "primary-gone")
    report = tmp_path / "drill.html"
    code, out = vna("dr", "drill", "--full", "--report", str(report))
    assert code == 0, out
    assert "PASSED" in out
    assert "read           7 instances (full), 6 bit-exact" in out
    assert "would be lost  1 instances" in out
    page = report.read_text()
    assert "PASSED" in page and "<style>" in page and "<script" not in page
    assert "RTO" in page and "RPO" in page

    async def drill_rows() -> list[dict]:
        async with opened(settings) as archive:
            rows = await fetch(archive, "SELECT * FROM dr_drills ORDER BY id")
            audit = await fetch(archive, "SELECT * FROM audit WHERE action = 'dr-drill'")
            assert len(audit) == len(rows)
            return rows

    (drill_row,) = asyncio.run(drill_rows())
    assert drill_row["verified"] == 6 and drill_row["defects"] == 0
    assert drill_row["lost_instances"] == 1
    assert 0 < drill_row["rto_seconds"] < 30
    assert drill_row["rpo_seconds"] > 0

    # Defects on the replica: one object deleted, one overwritten with other bytes.
    query = parse_qs(urlparse(s3_url).query)
    s3 = boto3.client("s3", endpoint_url=query["endpoint_url"][0], region_name="us-east-1")
    bucket = urlparse(s3_url).netloc
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert len(keys) == 6
    s3.delete_object(Bucket=bucket, Key=keys[0])
    s3.put_object(Bucket=bucket, Key=keys[1], Body=b"\x28\xb5\x2f\xfd" + b"not this" * 100)
    code, out = vna("dr", "drill", "--full", "--report", str(report))
    assert code == 1
    assert "FAILED" in out and "defects        2" in out
    assert "missing" in out and "corrupt" in out
    page = report.read_text()
    assert "FAILED" in page and page.count('class="defect"') == 2


# --- reads fall back to the replica ------------------------------------------------------------


async def test_wado_falls_back_to_replica_when_primary_objects_are_gone(
    archive_settings: Settings, tmp_path: Path
) -> None:
    from aiohttp import web

    from tests.conftest import free_port
    from vna.gateway.web import create_app

    settings = with_replica(archive_settings, (tmp_path / "replica").as_uri())
    async with opened(settings) as archive:
        study = smooth_ct_study(series=1, slices=3, size=64)
        sent = await ingest(archive, study)
        await run_once(archive)
        shutil.move(primary_root(settings), tmp_path / "primary-gone")
        runner = web.AppRunner(create_app(archive))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            url = f"http://127.0.0.1:{port}/dicom-web/studies/{study[0].StudyInstanceUID}"
            async with (
                aiohttp.ClientSession() as http,
                http.get(url, headers={"Accept": ACCEPT}) as resp,
            ):
                assert resp.status == 200
                parts = split_multipart(await resp.read(), resp.headers["Content-Type"])
        finally:
            await runner.cleanup()
        assert sorted(map(sha, parts)) == sorted(map(sha, sent.values()))
        text = archive.metrics.render().decode()
        assert 'vna_retrieve_fallbacks_total{reason="missing",store="dr"} 3.0' in text


# --- failover, ingest, failback ------------------------------------------------------------------


async def test_failover_then_ingest_then_failback_loses_nothing(
    archive_settings: Settings, tmp_path: Path
) -> None:
    replica_root = tmp_path / "replica"
    settings = with_replica(
        with_lifecycle(archive_settings, compression={"level": 3, "min_size": 4096}),
        replica_root.as_uri(),
    )
    async with opened(settings) as archive:
        sent = await ingest(archive, smooth_ct_study(series=1, slices=3, size=96))
        await run_once(archive)
        report = await failover.failover(archive, "dr", actor="test")
        assert report.missing_instances == 0

    # Every process that opens the archive now serves from, and writes to, the replica.
    async with opened(settings) as archive:
        assert archive.store.name == "dr"
        during = await ingest(archive, smooth_ct_study(patient_id="DURING", series=1, slices=2))
        await run_once(archive)  # compresses them on the replica (new keys)
        status = await dr_status.collect_status(archive)
        assert status["failover"]["received_since_instances"] == 2
        keys = [r["object_key"] for r in await fetch(archive, "SELECT object_key FROM instances")]
        primary = FilesystemStore(primary_root(settings))
        missing = [k for k in keys if await primary.stat(k) is None]
        assert len(missing) == 2  # written during the failover: on the replica only

        back = await failover.failback(archive, actor="test")
        assert back.switched and not back.lost and not back.failed
        assert back.copied == 2
        assert all([await primary.stat(k) is not None for k in keys])
        audit = await fetch(archive, "SELECT action FROM audit WHERE origin = 'dr' ORDER BY id")
        assert [a["action"] for a in audit] == ["dr-failover", "dr-failback"]

    # Back on the primary, with the replica gone: every instance, bit-exact.
    shutil.move(replica_root, tmp_path / "replica-gone")
    async with opened(settings) as archive:
        assert archive.store.name == "primary"
        got = await all_instances(archive)
        assert {k: sha(v) for k, v in got.items()} == {
            k: sha(v) for k, v in (sent | during).items()
        }
    # The replica comes back: what was written during the failover is recorded on it already
    # (read and verified by the failback), so replication has nothing left to do.
    shutil.move(tmp_path / "replica-gone", replica_root)
    async with opened(settings) as archive:
        rows = await fetch(archive, "SELECT object_key FROM replicas WHERE store = 'dr'")
        assert {r["object_key"] for r in rows} >= set(keys)
        summary = await run_once(archive)
        assert summary.dead == {}


async def test_failback_refuses_when_an_instance_has_no_good_copy(
    archive_settings: Settings, tmp_path: Path
) -> None:
    settings = with_replica(archive_settings, (tmp_path / "replica").as_uri())
    async with opened(settings) as archive:
        await ingest(archive, smooth_ct_study(series=1, slices=1, size=64))
        await run_once(archive)
        await failover.failover(archive, "dr", actor="test")
    async with opened(settings) as archive:
        await ingest(archive, smooth_ct_study(patient_id="DURING", series=1, slices=1, size=64))
        (row,) = await fetch(archive, "SELECT object_key FROM instances ORDER BY id DESC LIMIT 1")
        await archive.store.delete(row["object_key"])  # lost on the only store that had it
        back = await failover.failback(archive, actor="test")
        assert not back.switched and len(back.lost) == 1
        (state,) = await fetch(archive, "SELECT active_store FROM dr_state")
        assert state["active_store"] == "dr"


async def test_drill_without_replicas_reads_the_configured_store(
    archive_settings: Settings,
) -> None:
    """The Terraform dr-drill task: no [[replicas]], storage_url pointing at the DR bucket that
    S3 cross-region replication fills.  Missing objects younger than the grace period are the
    replication lag (RPO), older ones defects."""
    async with opened(archive_settings) as archive:
        await ingest(archive, smooth_ct_study(series=1, slices=3, size=64))
        result = await drill.drill(archive, full=True, actor="test")
        assert (result.tracking, result.store, result.passed) == ("external", "storage_url", True)
        assert result.verified == 3 and result.rpo_seconds == 0

        (row,) = await fetch(archive, "SELECT object_key FROM instances LIMIT 1")
        await archive.store.delete(row["object_key"])
        young = await drill.drill(archive, full=True, actor="test")
        assert young.passed and young.lost_instances == 1 and young.rpo_seconds > 0
        old = await drill.drill(archive, full=True, actor="test", external_grace_seconds=0)
        assert not old.passed and [d.outcome for d in old.defects] == ["missing"]


def test_failover_and_failback_commands(
    archive_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = with_replica(archive_settings, (tmp_path / "replica").as_uri())
    config = tmp_path / "vna.toml"
    config.write_text(
        f'data_dir = "{settings.data_dir}"\ndatabase_url = "{settings.database_url}"\n'
        f'[[replicas]]\nname = "dr"\nstorage_url = "{(tmp_path / "replica").as_uri()}"\n'
    )

    def vna(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--config", str(config), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    async def load() -> None:
        async with opened(settings) as archive:
            await ingest(archive, smooth_ct_study(series=1, slices=2, size=64))

    asyncio.run(load())
    code, out, _ = vna("dr", "failover", "--to", "dr")
    assert code == 0
    assert "active store is now dr (was primary)" in out
    assert "copied before switching  2 instances" in out
    code, out, _ = vna("dr", "status")
    assert "FAILED OVER" in out and "role           active store" in out
    code, _, err = vna("dr", "failover", "--to", "dr")
    assert code == 1 and err == "vna: dr is already the active store\n"
    code, _, err = vna("dr", "failover", "--to", "elsewhere")
    assert code == 1 and "not a declared replica (dr)" in err
    code, out, _ = vna("dr", "failback")
    assert code == 0
    assert "2 present, 0 copied" in out and "active store is now primary" in out
    code, _, err = vna("dr", "failback")
    assert code == 1 and "not failed over" in err


# --- status after a failed drill ----------------------------------------------------------------


def test_status_reports_the_defects_of_the_last_drill_until_repaired(
    archive_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    replica_root = tmp_path / "replica"
    settings = with_replica(archive_settings, replica_root.as_uri())
    config = tmp_path / "vna.toml"
    config.write_text(
        f'data_dir = "{settings.data_dir}"\ndatabase_url = "{settings.database_url}"\n'
        f'[[replicas]]\nname = "dr"\nstorage_url = "{replica_root.as_uri()}"\n'
    )

    def vna(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--config", str(config), *args])
        return code, capsys.readouterr().out

    async def load() -> list[dict]:
        async with opened(settings) as archive:
            await ingest(archive, smooth_ct_study(patient_id="P1", series=1, slices=3, size=64))
            await run_once(archive)  # replicated: nothing in the backlog
            return await fetch(archive, "SELECT sop_uid, object_key FROM instances ORDER BY id")

    instances = asyncio.run(load())
    code, out = vna("dr", "status")
    assert code == 0 and "(every instance has a verified copy)" in out and "DEFECTS" not in out

    # One copy on the replica rots; its record still says verified.
    damaged = instances[1]
    (path,) = [
        p for p in replica_root.rglob("*") if p.name == damaged["object_key"].rsplit("/")[-1]
    ]
    path.write_bytes(b"not the image" * 50)
    code, out = vna("dr", "drill", "--full")
    assert code == 1 and "FAILED" in out

    code, out = vna("dr", "status")
    assert "every instance has a verified copy" not in out
    assert "(every instance has a recorded copy, but 1 of them failed the last drill)" in out
    assert "DEFECTS        1 copy on dr failed drill #1" in out
    assert f"corrupt {damaged['sop_uid']}" in out
    code, out = vna("dr", "status", "--format", "json")
    (replica,) = json.loads(out)["replicas"]
    assert [d["sop_uid"] for d in replica["unrepaired_defects"]] == [damaged["sop_uid"]]

    # Repaired as the status says: the copy is forgotten, copied again, verified.
    assert vna("verify", "--store", "dr", "--all")[0] == 1  # reports the damage
    assert vna("lifecycle", "run", "--once")[0] == 0
    code, out = vna("dr", "status")
    assert "(every instance has a verified copy)" in out and "  DEFECTS  " not in out
    assert "last drill     #1" in out and "1 DEFECTS" in out  # the drill's own record stands
