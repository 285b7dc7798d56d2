"""Filing a new instance in one statement (migration 0070), and the pool's session reset.

The one-statement filing is ingest's common case; whenever it is not the plain case it must
write nothing at all, so that the general path can decide and name the problem.
"""

from __future__ import annotations

import asyncio
import logging
import tracemalloc
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.factory import ct_study, part10
from vna.archive import Archive
from vna.catalog.database import Database
from vna.config import DEFAULT_SOURCE
from vna.dicom.parse import dicom_json, extract_header, read_dataset
from vna.errors import PatientMismatch
from vna.ingest import filing
from vna.ingest.group import FilingGroup
from vna.ingest.pipeline import Outcome, Sender

SENDER = Sender(DEFAULT_SOURCE, "stow-rs", "tester", "127.0.0.1")
TABLES = ("patients", "studies", "series", "instances", "jobs", "audit")


def _version(tmp_path: Path, series_uid: str | None = None, **study: Any) -> filing.Version:
    ds = ct_study(series=1, slices=1, **study)[0]
    if series_uid is not None:
        ds.SeriesInstanceUID = series_uid
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(part10(ds))
    parsed = read_dataset(path)
    header = extract_header(parsed)
    return filing.Version(
        header=header,
        issuer=header.issuer_of_patient_id,
        source="default",
        sha256="ab" * 32,
        received_sha256="cd" * 32,
        data_set_sha256="cd" * 32,
        size=path.stat().st_size,
        object_key=f"objects/{header.sop_instance_uid}",
        metadata=dicom_json(parsed),
    )


async def _counts(db: Database) -> dict[str, int]:
    async with db.acquire() as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


async def _file(db: Database, v: filing.Version) -> int | None:
    async with db.acquire() as conn:
        return await filing.file_new_instance(
            conn, v, actor="tester", origin="127.0.0.1", detail={"protocol": "stow-rs"}
        )


async def test_a_new_instance_is_filed_with_its_job_and_audit_record(archive: Archive, tmp_path):
    v = _version(tmp_path)
    instance_id = await _file(archive.db, v)
    assert instance_id is not None
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT i.sop_uid, i.object_key, i.received_sha256, st.study_uid, p.patient_id"
            " FROM instances i JOIN series se ON se.id = i.series_fk"
            " JOIN studies st ON st.id = se.study_fk JOIN patients p ON p.id = st.patient_fk"
            " WHERE i.id = $1",
            instance_id,
        )
        job = await conn.fetchrow("SELECT kind, payload FROM jobs")
        audit = await conn.fetchrow("SELECT actor, origin, action, sop_uid, detail FROM audit")
    assert dict(row) == {
        "sop_uid": v.header.sop_instance_uid,
        "object_key": v.object_key,
        "received_sha256": v.received_sha256,
        "study_uid": v.header.study_uid,
        "patient_id": v.header.patient_id,
    }
    assert job["kind"] == "instance-stored"
    assert job["payload"] == {
        "instance_id": instance_id,
        "object_key": v.object_key,
        "sop_uid": v.header.sop_instance_uid,
    }
    assert (audit["actor"], audit["origin"], audit["action"], audit["sop_uid"]) == (
        "tester",
        "127.0.0.1",
        "store",
        v.header.sop_instance_uid,
    )
    assert audit["detail"] == {"protocol": "stow-rs"}


async def test_a_study_under_another_patient_writes_nothing(archive: Archive, tmp_path):
    first = _version(tmp_path, patient_id="A1")
    assert await _file(archive.db, first) is not None
    other = _version(tmp_path, patient_id="B2", study_uid=first.header.study_uid)
    before = await _counts(archive.db)
    assert await _file(archive.db, other) is None
    # Not even the new patient: the general path refuses this instance.
    assert await _counts(archive.db) == before


async def test_an_instance_filed_meanwhile_writes_nothing(archive: Archive, tmp_path):
    v = _version(tmp_path)
    assert await _file(archive.db, v) is not None
    before = await _counts(archive.db)
    assert await _file(archive.db, v) is None
    assert await _counts(archive.db) == before


async def test_concurrent_first_instances_of_a_series_file_one_hierarchy(
    archive: Archive, tmp_path
):
    # The instances of a new study arrive at once over several connections: each is filed,
    # under one patient, one study and one series.
    first = _version(tmp_path)
    h = first.header
    others = [
        _version(
            tmp_path,
            patient_id=h.patient_id,
            study_uid=h.study_uid,
            series_uid=h.series_uid,
        )
        for _ in range(11)
    ]
    ids = await asyncio.gather(*(_file(archive.db, v) for v in [first, *others]))
    assert None not in ids and len(set(ids)) == 12
    counts = await _counts(archive.db)
    assert (counts["patients"], counts["studies"], counts["series"], counts["instances"]) == (
        1,
        1,
        1,
        12,
    )


async def test_instances_of_one_series_are_filed_side_by_side(archive: Archive, tmp_path):
    first = _version(tmp_path)
    h = first.header
    same_series = {
        "patient_id": h.patient_id,
        "study_uid": h.study_uid,
        "series_uid": h.series_uid,
    }
    assert await _file(archive.db, first) is not None
    async with archive.db.acquire() as holder, holder.transaction():
        # One sender's instance is filed and not yet committed...
        pending = _version(tmp_path, **same_series)
        assert (
            await filing.file_new_instance(holder, pending, actor="a", origin="", detail={})
            is not None
        )
        async with archive.db.acquire() as other:
            # ...another sender's instance of the same series does not wait for it,
            await other.execute("SET lock_timeout = '2s'")
            try:
                assert (
                    await filing.file_new_instance(
                        other, _version(tmp_path, **same_series), actor="b", origin="", detail={}
                    )
                    is not None
                )
                # ...while an administrator's change to the series waits for it, as it must.
                with pytest.raises(asyncpg.LockNotAvailableError):
                    await other.execute(
                        "UPDATE series SET series_description = 'MOVED' WHERE series_uid = $1",
                        h.series_uid,
                    )
            finally:
                await other.execute("RESET lock_timeout")


async def test_the_general_path_names_the_patient_the_fast_path_declined(
    archive: Archive, tmp_path
):
    study = ct_study(series=1, slices=2, patient_id="A1")
    study[1].PatientID = "B2"
    paths = []
    for ds in study:
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(part10(ds))
        paths.append(path)
    assert (await archive.ingester.ingest_file(paths[0], SENDER)).outcome is Outcome.STORED
    with pytest.raises(PatientMismatch, match="archived under patient 'A1'"):
        await archive.ingester.ingest_file(paths[1], SENDER)
    counts = await _counts(archive.db)
    assert (counts["patients"], counts["instances"]) == (1, 1)


async def test_a_session_lock_never_outlives_the_loan(db: Database, database_url: str):
    # The scheduler and migrations hold session advisory locks; if their own unlock never
    # runs, the pool's reset must still release the lock, or no process would ever run them.
    async with db.session() as conn:
        assert await conn.fetchval("SELECT pg_try_advisory_lock(4242)")
    other = await asyncpg.connect(database_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock(4242)")
    finally:
        await other.close()


# --- several new instances in one statement (migration 0090), one STOW-RS request's group ---


def _new(v: filing.Version, actor: str = "tester") -> filing.NewFiling:
    return filing.NewFiling(v, actor, "127.0.0.1", {"protocol": "stow-rs"})


async def test_a_group_files_each_instance_with_its_job_and_audit_record(
    archive: Archive, tmp_path
):
    first = _version(tmp_path, patient_id="A1")
    h = first.header
    group = [first] + [
        _version(tmp_path, patient_id="A1", study_uid=h.study_uid, series_uid=h.series_uid)
        for _ in range(3)
    ]
    group.append(_version(tmp_path, patient_id="C3"))  # another patient in the same request
    async with archive.db.acquire() as conn:
        ids = await filing.file_new_instances(conn, [_new(v) for v in group])
    assert None not in ids and len(set(ids)) == 5
    async with archive.db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT i.id, i.sop_uid, p.patient_id FROM instances i"
            " JOIN series se ON se.id = i.series_fk JOIN studies st ON st.id = se.study_fk"
            " JOIN patients p ON p.id = st.patient_fk"
        )
        jobs = await conn.fetch("SELECT payload FROM jobs WHERE kind = 'instance-stored'")
        audits = await conn.fetch("SELECT sop_uid, action, detail FROM audit")
    # Each id is the row of the instance at the same place in the group.
    filed = {r["id"]: (r["sop_uid"], r["patient_id"]) for r in rows}
    expected = [(v.header.sop_instance_uid, v.header.patient_id) for v in group]
    assert [filed[i] for i in ids] == expected
    assert sorted(j["payload"]["instance_id"] for j in jobs) == sorted(ids)
    assert sorted(a["sop_uid"] for a in audits) == sorted(v.header.sop_instance_uid for v in group)
    assert all(a["action"] == "store" and a["detail"] == {"protocol": "stow-rs"} for a in audits)
    counts = await _counts(archive.db)
    assert (counts["patients"], counts["studies"], counts["series"]) == (2, 2, 2)


async def test_a_group_leaves_out_what_is_not_the_plain_case_and_files_the_rest(
    archive: Archive, tmp_path
):
    archived = _version(tmp_path, patient_id="A1")
    assert await _file(archive.db, archived) is not None
    wrong_patient = _version(tmp_path, patient_id="B2", study_uid=archived.header.study_uid)
    fine = [_version(tmp_path, patient_id="D4") for _ in range(2)]
    before = await _counts(archive.db)
    async with archive.db.acquire() as conn:
        ids = await filing.file_new_instances(
            conn, [_new(fine[0]), _new(archived), _new(wrong_patient), _new(fine[1])]
        )
    assert ids[1] is None and ids[2] is None  # filed already; study under another patient
    assert ids[0] is not None and ids[3] is not None
    after = await _counts(archive.db)
    # The two others wrote nothing, not even patient B2: only D4's two instances are new.
    assert after["instances"] == before["instances"] + 2
    assert after["patients"] == before["patients"] + 1
    assert after["audit"] == before["audit"] + 2
    assert after["jobs"] == before["jobs"] + 2


async def test_a_failed_group_statement_files_each_instance_alone(
    archive: Archive, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    """Whatever fails the one statement (here: refused outright), each instance is then filed
    alone and gets its own outcome."""

    async def refused(conn: Any, filings: Any) -> list[int | None]:
        raise asyncpg.DeadlockDetectedError("deadlock detected")

    monkeypatch.setattr(filing, "file_new_instances", refused)
    archived = _version(tmp_path, patient_id="A1")
    assert await _file(archive.db, archived) is not None
    fresh = [_version(tmp_path, patient_id="E5") for _ in range(3)]
    group = FilingGroup(archive.db)
    for _ in range(4):
        group.join()
    waiters = [asyncio.ensure_future(group.file(_new(v))) for v in [*fresh, archived]]
    group.close()
    results = await asyncio.wait_for(asyncio.gather(*waiters), 30)
    assert results[3] is None and None not in results[:3]
    assert (await _counts(archive.db))["instances"] == 4


async def test_a_group_files_when_every_instance_still_in_flight_waits(archive: Archive, tmp_path):
    """Not before: the request's other instances may still come.  Not later: once the
    request is closed and the last one waits, or one leaves without filing."""
    group = FilingGroup(archive.db)
    for _ in range(3):
        group.join()
    a = asyncio.ensure_future(group.file(_new(_version(tmp_path))))
    b = asyncio.ensure_future(group.file(_new(_version(tmp_path))))
    group.close()
    await asyncio.sleep(0.3)
    assert not a.done() and not b.done()  # the third instance is still being examined
    assert (await _counts(archive.db))["instances"] == 0
    group.leave()  # it was refused (or a duplicate): nothing more to wait for
    assert None not in await asyncio.wait_for(asyncio.gather(a, b), 30)
    assert (await _counts(archive.db))["instances"] == 2


async def test_two_requests_filing_the_same_new_series_in_opposite_orders_both_succeed(
    archive: Archive, tmp_path, caplog: pytest.LogCaptureFixture
):
    """Each group takes its locks in one order (patient, study, series, instance), so two
    requests creating the same new hierarchy at once cannot deadlock one another."""
    first = _version(tmp_path, patient_id="F6")
    h = first.header
    second = _version(tmp_path, patient_id="G7")
    series = [first] + [
        _version(tmp_path, patient_id="F6", study_uid=h.study_uid, series_uid=h.series_uid)
        for _ in range(5)
    ]
    others = [
        _version(
            tmp_path,
            patient_id="G7",
            study_uid=second.header.study_uid,
            series_uid=second.header.series_uid,
        )
        for _ in range(5)
    ]
    request_a = series[:3] + others[:3]
    request_b = list(reversed(series[3:] + others[3:] + [second]))

    async def send(versions: list[filing.Version]) -> list[int | None]:
        group = FilingGroup(archive.db)
        for _ in versions:
            group.join()
        waiters = [asyncio.ensure_future(group.file(_new(v))) for v in versions]
        group.close()
        return await asyncio.gather(*waiters)

    with caplog.at_level(logging.WARNING, logger="vna.ingest.group"):
        results = await asyncio.wait_for(asyncio.gather(send(request_a), send(request_b)), 60)
    assert all(None not in r for r in results)
    # Filed as two groups: neither statement failed (a deadlock would have failed one, and
    # its instances would then have been filed one by one).
    assert "one by one" not in caplog.text
    counts = await _counts(archive.db)
    assert (counts["patients"], counts["studies"], counts["series"], counts["instances"]) == (
        2,
        2,
        2,
        12,
    )


async def test_instances_waiting_in_a_group_do_not_hold_their_received_files(
    archive: Archive, tmp_path
):
    """A request of many parts: those already stored wait for the others without keeping
    the received bytes (nor a data set that refers to them) in memory."""

    study = ct_study(series=1, slices=24, size=1024)  # 2 MiB of pixels each
    paths = []
    for ds in study:
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(part10(ds))
        paths.append(path)
    received = sum(p.stat().st_size for p in paths)
    group = FilingGroup(archive.db)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tasks = [
            asyncio.ensure_future(archive.ingester.ingest_file(p, SENDER, group=group))
            for p in paths
        ]
        for _ in range(600):
            if group.waiting == len(paths):
                break
            await asyncio.sleep(0.05)
        assert group.waiting == len(paths)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        group.close()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert all(r.outcome is Outcome.STORED for r in results)
    assert held < received / 8, f"{held / 2**20:.1f} MiB held for {received / 2**20:.0f} MiB"
