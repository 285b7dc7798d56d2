"""The change feed over HTTP, read as Microsoft's DICOM change feed (v2) clients read it: every
change appears once, in commit order, with the action and state a consumer acts on; readers are
authorised and restricted readers see their sources' changes only; old entries are pruned."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
from typing import Any

import pytest
from pydicom.uid import generate_uid

from lifecycle import retention, scheduler
from lifecycle.engine import Engine
from tests.factory import ct_study, part10
from tests.integration.lifecycle_support import fetch, ingest
from tests.integration.test_federation_admin import (
    ADMIN_TOKEN,
    SOURCES,
    _sha,
    admin_url,
    call,
    stow,
)
from tests.integration.test_lifecycle_retention import RULES, TODAY, study, years_ago
from vna.catalog import changes
from vna.catalog.database import Database
from vna.config import AdminSettings, ChangeFeedSettings, Settings, SourceSettings
from vna.security import tokens

pytestmark = pytest.mark.asyncio


@pytest.fixture
def archive_settings(archive_settings: Settings) -> Settings:
    return dataclasses.replace(
        archive_settings,
        sources=SOURCES,
        admin=AdminSettings(_sha(ADMIN_TOKEN)),
        retention_rules=RULES,
        changefeed=ChangeFeedSettings(keep_days=30),
    )


async def feed(url: str, query: str = "", token: str = ADMIN_TOKEN) -> list[dict[str, Any]]:
    status, body = await call("GET", f"{url}/changefeed{query}", token=token)
    assert status == 200, body
    return list(body)


async def follow(url: str, token: str = ADMIN_TOKEN) -> list[dict[str, Any]]:
    """Everything in the feed, read as Microsoft's documented client does: offset grows by
    what was read, until a page comes back empty."""
    entries: list[dict[str, Any]] = []
    while page := await feed(url, f"?offset={len(entries)}&limit=200&includeMetadata=false", token):
        entries.extend(page)
    return entries


def by_instance(entries: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for e in entries:
        out.setdefault(e["SopInstanceUid"], []).append((e["Action"], e["State"]))
    return out


async def test_concurrent_writers_on_two_nodes_are_read_without_gap_or_duplicate(
    archive, dicomweb, database_url
):
    """4 writers (2 per archive node, each node its own connection pool on the one catalogue)
    make 1,000 changes, holding their transactions open for random times so that they commit
    out of the order they wrote in, while a client follows the feed with offset paging.  A
    sequence handed out at insert would let the client see a later number before an earlier
    one had committed, and skip the earlier one for good."""
    nodes = [await Database.connect(database_url, max_size=4) for _ in range(2)]
    written: set[str] = set()
    done = asyncio.Event()

    async def writer(db: Database, n: int) -> None:
        rng = random.Random(n)
        for _ in range(250):
            uid = generate_uid()
            async with db.transaction() as conn:
                await changes.record(
                    conn,
                    action="create",
                    study_uid="1.2.3",
                    series_uid="1.2.3.4",
                    sop_uid=uid,
                    source="H1",
                )
                await asyncio.sleep(rng.random() * 0.01)
            written.add(uid)

    read: list[dict[str, Any]] = []

    async def reader() -> None:
        while True:
            finished = done.is_set()
            page = await feed(dicomweb, f"?offset={len(read)}&limit=200&includeMetadata=false")
            read.extend(page)
            if finished and not page:
                return
            if not page:
                await asyncio.sleep(0.02)

    try:
        following = asyncio.create_task(reader())
        await asyncio.gather(*(writer(nodes[i % 2], i) for i in range(4)))
        done.set()
        await following
    finally:
        for db in nodes:
            await db.close()

    sequences = [e["Sequence"] for e in read]
    assert len(read) == 1000
    assert {e["SopInstanceUid"] for e in read} == written
    assert sequences == list(range(sequences[0], sequences[0] + 1000))  # no gap, in order
    stamps = [e["Timestamp"] for e in read]
    assert stamps == sorted(stamps)
    latest_status, latest = await call("GET", f"{dicomweb}/changefeed/latest", token=ADMIN_TOKEN)
    assert latest_status == 200 and latest["Sequence"] == sequences[-1]


async def test_stored_replaced_and_corrected_instances(archive, dicomweb):
    """STOW-RS (filed as a group) writes one create per instance with its metadata; a study
    correction writes an update per instance, and the earlier entries become replaced."""
    s = ct_study(patient_id="P1", series=2, slices=2, accession="WRONG1")
    assert await stow(dicomweb, [part10(ds) for ds in s], "H1") == 202
    entries = await feed(dicomweb)
    assert [(e["Action"], e["State"]) for e in entries] == [("create", "current")] * 4
    assert {e["SopInstanceUid"] for e in entries} == {str(ds.SOPInstanceUID) for ds in s}
    one = next(e for e in entries if e["SopInstanceUid"] == s[0].SOPInstanceUID)
    assert one["StudyInstanceUid"] == s[0].StudyInstanceUID
    assert one["SeriesInstanceUid"] == s[0].SeriesInstanceUID
    assert one["Metadata"]["00080050"]["Value"] == ["WRONG1"]
    assert one["Timestamp"].endswith("Z")

    uid = s[0].StudyInstanceUID
    status, result = await call(
        "POST", f"{admin_url(dicomweb)}/studies/{uid}/update", {"set": {"AccessionNumber": "R1"}}
    )
    assert status == 200, result
    entries = await follow(dicomweb)
    history = by_instance(entries)
    for ds in s:
        assert history[str(ds.SOPInstanceUID)] == [("create", "replaced"), ("update", "current")]
    # The metadata is the instance's current one, as Microsoft's feed gives it.
    last = (await feed(dicomweb, f"?offset={len(entries) - 1}"))[0]
    assert last["Metadata"]["00080050"]["Value"] == ["R1"]
    status, latest = await call("GET", f"{dicomweb}/changefeed/latest?includemetadata=false")
    assert status == 200 and latest["Sequence"] == entries[-1]["Sequence"]
    assert "Metadata" not in latest


async def test_a_merge_appears_as_updates(archive, dicomweb):
    keep = ct_study(patient_id="P1", series=1, slices=1)
    dup = ct_study(patient_id="X9", series=1, slices=2)
    assert await stow(dicomweb, [part10(ds) for ds in keep], "H1") == 202
    assert await stow(dicomweb, [part10(ds) for ds in dup], "H2") == 202
    body = {
        "from": {"PatientID": "X9", "IssuerOfPatientID": "HOSP2"},
        "into": {"PatientID": "P1", "IssuerOfPatientID": "HOSP1"},
    }
    status, result = await call("POST", f"{admin_url(dicomweb)}/patients/merge", body)
    assert status == 200, result
    history = by_instance(await follow(dicomweb))
    for ds in dup:
        assert history[str(ds.SOPInstanceUID)] == [("create", "replaced"), ("update", "current")]
    assert history[str(keep[0].SOPInstanceUID)] == [("create", "current")]
    merged = (await feed(dicomweb, "?offset=3"))[0]
    assert merged["Metadata"]["00100020"]["Value"] == ["P1"]


async def test_a_restricted_reader_sees_its_sources_only(archive, dicomweb):
    one = ct_study(patient_id="P1", series=1, slices=1)
    two = ct_study(patient_id="P2", series=1, slices=1)
    assert await stow(dicomweb, [part10(ds) for ds in one], "H1") == 202
    assert await stow(dicomweb, [part10(ds) for ds in two], "H2") == 202
    async with archive.db.transaction() as conn:
        reader = await tokens.create_token(
            conn, name="ai-h1", role="reader", read_sources=["H1"], actor="test"
        )
    seen = await follow(dicomweb, token=reader.secret)
    assert [e["SopInstanceUid"] for e in seen] == [one[0].SOPInstanceUID]
    assert len(await follow(dicomweb)) == 2
    # A source token without read_sources may not read the feed; no token at all is refused.
    status, _ = await call("GET", f"{dicomweb}/changefeed", token="t-one")
    assert status == 403
    status, _ = await call("GET", f"{dicomweb}/changefeed", token=None)
    assert status == 401
    audited = await fetch(
        archive,
        "SELECT actor, coalesce(study_uids, ARRAY[study_uid]) AS uids FROM audit"
        " WHERE detail->>'protocol' = 'changefeed'",
    )
    assert ("ai-h1", [one[0].StudyInstanceUID]) in [(r["actor"], list(r["uids"])) for r in audited]


async def test_time_window_and_bad_parameters(archive, dicomweb):
    assert await stow(dicomweb, [part10(ds) for ds in ct_study(series=1, slices=2)], "H1") == 202
    entries = await feed(dicomweb)
    assert len(entries) == 2
    after = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    assert await feed(dicomweb, f"?startTime={after.replace('+00:00', 'Z')}") == []
    first = entries[0]["Timestamp"]
    assert len(await feed(dicomweb, f"?startTime={first}&endTime={after}")) == 2
    assert len(await feed(dicomweb, f"?endtime={first}")) == 0  # endTime is exclusive
    assert len(await feed(dicomweb, "?offset=1&limit=1")) == 1
    for bad in ("?limit=0", "?limit=201", "?offset=-1", "?startTime=yesterday",
                "?includeMetadata=maybe"):  # fmt: skip
        status, body = await call("GET", f"{dicomweb}/changefeed{bad}")
        assert status == 400, (bad, body)


async def test_empty_feed_has_no_latest(archive, dicomweb):
    status, _ = await call("GET", f"{dicomweb}/changefeed/latest")
    assert status == 404
    assert await feed(dicomweb) == []


async def test_retention_deletion_and_tier_move(archive, dicomweb):
    """A tier move is a tier entry that leaves the instance current; a retention deletion is a
    delete entry per instance, and every earlier entry of them becomes deleted."""
    from lifecycle.worker import run_once

    s = study("PV", years_ago(12))
    await ingest(archive, s, source=SourceSettings(name="DEFAULT"))
    await move_to_tier_recorded(archive, str(s[0].StudyInstanceUID))
    history = by_instance(await follow(dicomweb))
    assert history[str(s[0].SOPInstanceUID)] == [("create", "current"), ("tier", "current")]

    await run_once(archive)  # the instance-stored jobs compute the study's retention
    review = await retention.create_review(archive.db, RULES, TODAY, "rm")
    report = await retention.approve(archive, RULES, review.id, "rm")
    assert report.deleted == [str(s[0].StudyInstanceUID)]
    entries = await follow(dicomweb)
    history = by_instance(entries)
    for ds in s:
        assert history[str(ds.SOPInstanceUID)] == [
            ("create", "deleted"),
            ("tier", "deleted"),
            ("delete", "deleted"),
        ]
    deleted = [e for e in await feed(dicomweb, "?limit=200") if e["Action"] == "delete"]
    assert deleted and all(e["Metadata"] is None for e in deleted)


async def move_to_tier_recorded(archive, study_uid: str) -> None:
    """A tier move as the tiering job records it (lifecycle.tiering.move_study)."""
    from lifecycle import tiering
    from vna.catalog.queries import q

    engine = Engine(archive)
    async with archive.db.acquire() as conn:
        study_id = await conn.fetchval(q("study_row_id"), study_uid)
    assert await tiering.move_study(engine, study_id, "warm") > 0


async def test_old_entries_are_pruned_by_the_scheduler(archive):
    await ingest(archive, ct_study(series=1, slices=3))
    async with archive.db.acquire() as conn:
        assert await changes.sequence(conn) == 3
        await conn.execute(
            "UPDATE change_log SET logged_at = now() - interval '31 days'"
            " WHERE sequence = (SELECT min(sequence) FROM change_log)"
        )
    report = await scheduler.tick(Engine(archive))
    assert report.ran and report.changes_pruned == 1
    async with archive.db.acquire() as conn:
        assert len(await changes.read(conn)) == 2


async def test_an_iocm_rejection_and_its_undo_appear_in_the_feed(archive, dicomweb):
    """A rejection note for one of three instances (IOCM, filed by the ingest pipeline) shows
    that one rejected and no longer current; undoing the note serves it again (update)."""
    from tests.integration.test_rejections import rejection_note
    from vna.admin import rejections

    s = ct_study(series=1, slices=3)
    assert await stow(dicomweb, [part10(ds) for ds in s], "H1") == 202
    note = rejection_note(s, [s[1]])
    assert await stow(dicomweb, [part10(note)], "H1") in (200, 202)
    history = by_instance(await follow(dicomweb))
    rejected, kept = str(s[1].SOPInstanceUID), [str(s[0].SOPInstanceUID), str(s[2].SOPInstanceUID)]
    assert history[rejected] == [("create", "deleted"), ("reject", "deleted")]
    for uid in kept:
        assert history[uid] == [("create", "current")]
    await rejections.undo(archive.db, str(note.SOPInstanceUID), actor="test")
    history = by_instance(await follow(dicomweb))
    assert [action for action, _ in history[rejected]] == ["create", "reject", "update"]
    assert history[rejected][-1] == ("update", "current")
    with pytest.raises(ValueError, match="unknown change action"):
        async with archive.db.transaction() as conn:
            await changes.record_study(conn, "rejected", str(s[0].StudyInstanceUID))
