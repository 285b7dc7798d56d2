"""Deletion means deleted: after an approved retention deletion no object of the study is left
on any store (the primary, a filesystem replica, an S3 replica), compression originals still in
their grace period and earlier versions included; the other study keeps every object.  And
``vna retention approve`` as a records manager meets it: what it will delete first, --dry-run,
--as required off a terminal, the approver recorded."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import pty
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest

from lifecycle import retention
from lifecycle.worker import run_once
from tests.integration.lifecycle_support import fetch, ingest, instances_of, opened, with_lifecycle
from tests.phantom import dicom_date, smooth_ct_study
from vna.archive import Archive
from vna.cli import main
from vna.config import DEFAULT_SOURCE, ReplicaSettings, RetentionRuleSettings, Settings
from vna.storage.base import content_key

TODAY = dt.date.today()
RULES = (RetentionRuleSettings(name="short", retain_years=1),)
OLD = dicom_date(TODAY.replace(year=TODAY.year - 5))


async def keys_on_every_store(archive: Archive) -> dict[str, set[str]]:
    """Every object key on every configured store, listed from the stores themselves."""
    assert archive.sites is not None
    out = {}
    for name in ("primary", *archive.sites.replica_names):
        store = archive.sites.get(name)
        out[name] = {k async for k in store.iter_keys()}
    return out


async def study_keys(archive: Archive, study_uid: str) -> set[str]:
    """The study's current objects, its earlier versions' and the uncompressed originals."""
    rows = await fetch(
        archive,
        "SELECT i.object_key, i.sha256 FROM instances i JOIN series se ON se.id = i.series_fk"
        " JOIN studies st ON st.id = se.study_fk WHERE st.study_uid = $1"
        " UNION SELECT v.object_key, v.sha256 FROM instance_versions v"
        " JOIN instances i ON i.id = v.instance_fk JOIN series se ON se.id = i.series_fk"
        " JOIN studies st ON st.id = se.study_fk WHERE st.study_uid = $1",
        study_uid,
    )
    return {r["object_key"] for r in rows} | {content_key(r["sha256"]) for r in rows}


async def test_no_object_of_a_deleted_study_remains_on_any_store(
    archive_settings: Settings, s3_url: str, tmp_path: Path
) -> None:
    settings = with_lifecycle(
        dataclasses.replace(
            archive_settings,
            replicas=(
                ReplicaSettings("nas", (tmp_path / "nas").as_uri()),
                ReplicaSettings("dr", s3_url),
            ),
        ),
        # Originals wait an hour after compression before their deletion job runs.
        compression={"level": 3, "min_size": 4096},
        lifecycle={"delete_grace_seconds": 3600},
        retention_rules=RULES,
    )
    replacing = dataclasses.replace(DEFAULT_SOURCE, on_conflict="replace")
    async with opened(settings) as archive:
        doomed = smooth_ct_study(patient_id="GONE", series=1, slices=3, size=96, study_date=OLD)
        kept = smooth_ct_study(
            patient_id="KEPT", series=1, slices=2, size=96, study_date=dicom_date(TODAY)
        )
        await ingest(archive, doomed, replacing)
        await ingest(archive, kept)
        await run_once(archive)  # compress (originals wait), replicate to both replicas
        # A corrected image sent again: the first version is kept as an earlier version.
        doomed[0].PixelData = np.full(96 * 96, 7, dtype=np.uint16).tobytes()
        await ingest(archive, doomed[:1], replacing)
        await run_once(archive)

        doomed_uid, kept_uid = str(doomed[0].StudyInstanceUID), str(kept[0].StudyInstanceUID)
        gone = await study_keys(archive, doomed_uid)
        stays = {i["object_key"] for i in await instances_of(archive, kept_uid)}
        before = await keys_on_every_store(archive)
        # The test is only worth something if the hard cases are there: originals in their
        # grace period and an earlier version on the primary, copies on both replicas.
        originals = {content_key(i["sha256"]) for i in await instances_of(archive, doomed_uid)}
        assert originals <= before["primary"]
        assert await fetch(archive, "SELECT 1 FROM instance_versions")
        assert before["nas"] & gone and before["dr"] & gone

        review = await retention.create_review(archive.db, RULES, TODAY, "records")
        assert [i["study_uid"] for i in review.due] == [doomed_uid]
        report = await retention.approve(archive, RULES, review.id, "Jane Roe")
        assert report.deleted == [doomed_uid] and not report.left_to_jobs
        assert report.deleted_objects == sum(len(keys & gone) for keys in before.values())

        after = await keys_on_every_store(archive)  # at once: no worker has run since
        for name, keys in after.items():
            assert not keys & gone, f"objects of the deleted study left on {name}"
            assert stays <= keys, f"objects of the kept study gone from {name}"
        # Nothing of it is left for the workers (the kept study's originals still wait).
        waiting = await fetch(
            archive,
            "SELECT payload ->> 'object_key' AS key FROM jobs WHERE state = 'queued'"
            " AND kind IN ('delete-object', 'replica-delete')",
        )
        assert not {w["key"] for w in waiting} & gone


async def test_a_study_on_legal_hold_keeps_every_object(archive_settings: Settings) -> None:
    settings = with_lifecycle(archive_settings, retention_rules=RULES)
    async with opened(settings) as archive:
        study = smooth_ct_study(patient_id="HELD", series=1, slices=1, size=64, study_date=OLD)
        await ingest(archive, study)
        await retention.set_hold(
            archive.db, actor="records", reason="court order", patient_id="HELD"
        )
        review = await retention.create_review(archive.db, RULES, TODAY, "records")
        report = await retention.approve(archive, RULES, review.id, "Jane Roe")
        assert report.deleted == [] and report.skipped == []  # held: listed, never due
        keys = {
            i["object_key"] for i in await instances_of(archive, str(study[0].StudyInstanceUID))
        }
        assert keys and keys <= (await keys_on_every_store(archive))["primary"]


async def test_an_object_under_s3_object_lock_keeps_its_study(
    archive_settings: Settings, s3_endpoint: str
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"vna-locked-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    settings = with_lifecycle(
        dataclasses.replace(
            archive_settings,
            replicas=(
                ReplicaSettings("dr", f"s3://{bucket}?endpoint_url={s3_endpoint}&region=us-east-1"),
            ),
        ),
        retention_rules=RULES,
    )
    async with opened(settings) as archive:
        study = smooth_ct_study(patient_id="WORM", series=1, slices=2, size=64, study_date=OLD)
        await ingest(archive, study)
        await run_once(archive)  # replicated to the locked bucket
        uid = str(study[0].StudyInstanceUID)
        locked = (await instances_of(archive, uid))[0]["object_key"]
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
        s3.put_object_retention(
            Bucket=bucket, Key=locked, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until}
        )
        review = await retention.create_review(archive.db, RULES, TODAY, "records")
        report = await retention.approve(archive, RULES, review.id, "Jane Roe")
        assert report.deleted == []
        ((skipped_uid, reason),) = report.skipped
        assert skipped_uid == uid
        assert reason == f"under S3 Object Lock on dr ({locked} locked until {until.date()})"
        assert await instances_of(archive, uid)  # still catalogued, every copy still there
        on = await keys_on_every_store(archive)
        assert locked in on["primary"] and locked in on["dr"]


CONFIG = """
[[retention_rules]]
name = "short"
retain_years = 1
"""


@pytest.fixture
def cli(tmp_path: Path, archive_settings: Settings, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "vna.toml"
    config.write_text(CONFIG)
    monkeypatch.setenv("VNA_DATABASE_URL", archive_settings.database_url)
    monkeypatch.setenv("VNA_DATA_DIR", str(archive_settings.data_dir))

    def run(*args: str) -> int:
        return main(["--config", str(config), *args])

    return run


def _load(settings: Settings) -> str:
    study = smooth_ct_study(patient_id="OLD", series=1, slices=2, size=64, study_date=OLD)

    async def go() -> None:
        async with opened(settings) as archive:
            await ingest(archive, study)

    asyncio.run(go())
    return str(study[0].StudyInstanceUID)


def _audit(settings: Settings, action: str) -> list[dict]:
    async def go() -> list[dict]:
        async with opened(settings) as archive:
            return await fetch(archive, "SELECT * FROM audit WHERE action = $1", action)

    return asyncio.run(go())


def _review(cli, capsys) -> int:
    assert cli("retention", "review", "--format", "json") == 0
    return int(json.loads(capsys.readouterr().out)["review"])


def test_approve_off_a_terminal_needs_as_and_yes(cli, archive_settings: Settings, capsys) -> None:
    uid = _load(archive_settings)
    review = _review(cli, capsys)

    assert cli("retention", "approve", str(review), "--yes") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vna: --as NAME is required when not on a terminal") and "\n" not in err

    assert cli("retention", "approve", str(review), "--as", "Jane Roe") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vna: not on a terminal, so nothing can be confirmed: give --yes")
    assert "\n" not in err

    assert cli("retention", "approve", str(review), "--as", "  ", "--yes") == 1
    assert "--as needs the name" in capsys.readouterr().err
    # Refused three times: nothing approved, nothing deleted.
    assert _audit(archive_settings, "retention-delete") == []
    assert cli("retention", "show", str(review), "--format", "json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "open" and [i["state"] for i in shown["items"]] == ["due"]
    assert shown["items"][0]["study_uid"] == uid


def test_dry_run_shows_what_would_go_and_changes_nothing(
    cli, archive_settings: Settings, capsys
) -> None:
    uid = _load(archive_settings)
    review = _review(cli, capsys)

    assert cli("retention", "approve", str(review), "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"approving review {review} deletes 1 study (2 instances" in out
    assert "from every store (primary): 2 object copies" in out
    assert f"  delete  {uid}  OLD" in out
    assert "dry run: nothing approved, nothing deleted" in out
    assert _audit(archive_settings, "retention-delete") == []
    assert cli("retention", "show", str(review), "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "open"


def test_the_approver_named_is_recorded(cli, archive_settings: Settings, capsys) -> None:
    uid = _load(archive_settings)
    review = _review(cli, capsys)

    assert cli("retention", "approve", str(review), "--as", "Jane Roe", "--yes") == 0
    out = capsys.readouterr().out
    assert f"  delete  {uid}" in out and f"review {review}: deleted 1 study" in out

    (approval,) = _audit(archive_settings, "retention-approve")
    assert approval["actor"] == "Jane Roe"
    detail = (
        json.loads(approval["detail"])
        if isinstance(approval["detail"], str)
        else approval["detail"]
    )
    assert detail["confirmed"] == "--yes" and detail["os_user"]  # the account, as a detail
    (deletion,) = _audit(archive_settings, "retention-delete")
    assert deletion["actor"] == "Jane Roe" and deletion["study_uid"] == uid
    assert cli("retention", "show", str(review), "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["approved_by"] == "Jane Roe"


def _on_a_terminal(
    config: Path, settings: Settings, args: list[str], answers: list[str]
) -> tuple[int, str]:
    """Run the installed ``vna`` with a pseudo-terminal as its stdin and stdout, answering each
    prompt in turn; its exit status and everything it printed."""
    master, slave = pty.openpty()
    env = {
        **os.environ,
        "VNA_DATABASE_URL": settings.database_url,
        "VNA_DATA_DIR": str(settings.data_dir),
    }
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "vna"), "--config", str(config), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if pending and (seen.rstrip().endswith(b":") or seen.rstrip().endswith(b"[y/N]")):
                os.write(master, pending.pop(0).encode() + b"\n")
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=30)
    os.close(master)
    return code, seen.decode(errors="replace")


def test_on_a_terminal_approve_asks_who_and_whether(
    cli, archive_settings: Settings, capsys, tmp_path: Path
) -> None:
    uid = _load(archive_settings)
    review = _review(cli, capsys)
    config = tmp_path / "vna.toml"

    code, out = _on_a_terminal(
        config, archive_settings, ["retention", "approve", str(review)], ["Jane Roe", "n"]
    )
    assert code == 1, out
    assert f"  delete  {uid}" in out and "your name, recorded as the approver:" in out
    assert f"approve review {review} as Jane Roe and delete 1 study now? [y/N]" in out
    assert "not approved; nothing deleted" in out
    assert _audit(archive_settings, "retention-delete") == []

    code, out = _on_a_terminal(
        config, archive_settings, ["retention", "approve", str(review), "--as", "Jane Roe"], ["y"]
    )
    assert code == 0, out
    assert f"review {review}: deleted 1 study" in out
    (approval,) = _audit(archive_settings, "retention-approve")
    detail = approval["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert approval["actor"] == "Jane Roe" and detail["confirmed"] == "on the terminal"
