"""Retention in the catalogue: retain-until dates, two-phase reviews, approved deletions.

1. Each study's retain-until date is computed by ``lifecycle.policy.retention`` when its
   instances arrive (the ``instance-stored`` job) and again for every study whenever the rules
   change (the rule set's fingerprint differs from the one the row was computed under).
2. A review lists the studies due as of a date, with rule, date, sizes and legal holds, and is
   saved with every study's identifiers and contents as reviewed.
3. An approval deletes exactly those studies, one transaction each, re-checking at that moment
   that the study is not on hold, that its rule is the one reviewed, that it is really due
   today, and that its contents are the ones reviewed; each deletion is audited.  A study of a
   look-ahead review that is not due yet is left pending and deleted on its date by the
   lifecycle scheduler, under the same checks.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, cast

import asyncpg

from lifecycle import queue, rejections
from lifecycle.dr import replication
from lifecycle.policy.deletion import (
    Hold,
    ObjectLock,
    Reviewed,
    StudyNow,
    Verdict,
    check_deletion,
)
from lifecycle.policy.retention import (
    RetentionDecision,
    StudyFacts,
    parse_dicom_date,
    retention,
    rules_fingerprint,
)
from vna.archive import Archive
from vna.catalog import audit, changes
from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.config import RetentionRuleSettings
from vna.errors import InvalidRequest, NotFound, VnaError
from vna.recovery.sites import store_urls
from vna.storage.base import ObjectStore, content_key

log = logging.getLogger(__name__)
_T = TypeVar("_T")
BATCH = 5000


# --- computing retain-until dates ----------------------------------------------------------------


def facts_of(row: Any) -> StudyFacts:
    return StudyFacts(
        study_date=row["study_date"],
        received_date=row["received_date"],
        birth_date=parse_dicom_date(row["birth_date"]),
        modalities=frozenset(row["modalities"]),
        study_description=row["study_description"],
        source=row["source"],
    )


async def load_facts(conn: asyncpg.Connection, study_ids: Sequence[int]) -> dict[int, StudyFacts]:
    rows = await conn.fetch(q("retention_facts"), list(study_ids))
    return {r["id"]: facts_of(r) for r in rows}


async def store_decisions(
    conn: asyncpg.Connection,
    decisions: dict[int, RetentionDecision],
    fingerprint: str,
) -> None:
    if not decisions:
        return
    ids = list(decisions)
    await conn.execute(
        q("retention_upsert"),
        ids,
        [decisions[i].rule for i in ids],
        [decisions[i].rule_fingerprint for i in ids],
        [decisions[i].retain_until for i in ids],
        [decisions[i].basis for i in ids],
        fingerprint,
    )


async def refresh_studies(
    conn: asyncpg.Connection, study_ids: Sequence[int], rules: Sequence[RetentionRuleSettings]
) -> dict[int, RetentionDecision]:
    """Compute and store the retention of these studies under ``rules``."""
    facts = await load_facts(conn, study_ids)
    decisions = {sid: retention(f, rules) for sid, f in facts.items()}
    await store_decisions(conn, decisions, rules_fingerprint(rules))
    return decisions


async def recompute_stale(db: Database, rules: Sequence[RetentionRuleSettings]) -> int:
    """Bring every study up to the current rules, in batches; returns how many were computed.

    Set-based reads and writes (one facts query and one upsert per batch) with the pure policy
    in between, so a catalogue of a million instances is a few seconds' work.
    """
    fingerprint = rules_fingerprint(rules)
    after = 0
    done = 0
    while True:
        async with db.acquire() as conn:
            ids = [
                r["id"]
                for r in await conn.fetch(q("retention_stale_batch"), fingerprint, after, BATCH)
            ]
            if not ids:
                return done
            async with conn.transaction():
                await refresh_studies(conn, ids, rules)
        done += len(ids)
        after = ids[-1]


# --- reviews ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    id: int
    as_of: dt.date
    created_at: dt.datetime
    created_by: str
    rules_fingerprint: str
    state: str
    items: list[dict[str, Any]]
    approved_by: str | None = None
    approved_at: dt.datetime | None = None
    #: Instances withdrawn by IOCM rejection notes (lifecycle.rejections), with the reason.
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def due(self) -> list[dict[str, Any]]:
        return [i for i in self.items if i["state"] != "held"]

    @property
    def held(self) -> list[dict[str, Any]]:
        return [i for i in self.items if i["state"] == "held"]


async def create_review(
    db: Database, rules: Sequence[RetentionRuleSettings], as_of: dt.date, actor: str
) -> Review:
    """List and save the studies due for deletion as of ``as_of``."""
    await recompute_stale(db, rules)
    async with db.transaction() as conn:
        head = await conn.fetchrow(q("review_create"), as_of, actor, rules_fingerprint(rules))
        await conn.execute(q("review_fill"), head["id"], as_of, rules_fingerprint(rules))
        await rejections.fill_review(conn, head["id"])
        counts = await conn.fetchrow(q("review_counts"), head["id"])
        rejected = await rejections.review_items(conn, head["id"])
        await _audit(
            conn,
            actor,
            "retention-review",
            detail={
                "review": head["id"],
                "as_of": as_of.isoformat(),
                "due": counts["due"],
                "held": counts["held"],
                "rejected_instances": len(rejected),
            },
        )
    return await load_review(db, head["id"])


async def load_review(db: Database, review_id: int) -> Review:
    async with db.acquire() as conn:
        head = await conn.fetchrow(q("review_get"), review_id)
        if head is None:
            raise NotFound(f"no retention review {review_id}")
        items = [dict(r) for r in await conn.fetch(q("review_items"), review_id)]
        rejected = await rejections.review_items(conn, review_id)
    return _from_row(Review, head, items=items, rejected=rejected)


def _from_row(cls: type[_T], row: Any, **given: Any) -> _T:
    """A dataclass from the catalogue row's columns of the same names (and ``given``)."""
    names = [f.name for f in fields(cast(Any, cls)) if f.init and f.name not in given]
    return cls(**{name: row[name] for name in names}, **given)


# --- approval and deletion --------------------------------------------------------------------


@dataclass
class ApprovalReport:
    review_id: int
    deleted: list[str] = field(default_factory=list)
    deleted_bytes: int = 0
    #: Objects removed, on every store together (the same object on two stores counts twice).
    deleted_objects: int = 0
    pending: list[tuple[str, dt.date]] = field(default_factory=list)
    #: (study UID, reason) of each study left alone.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: SOP Instance UIDs of the rejected instances deleted, and (UID, reason) of those left.
    deleted_instances: list[str] = field(default_factory=list)
    skipped_instances: list[tuple[str, str]] = field(default_factory=list)
    #: (store, object key, error) of each copy left to a deletion job (a store failed).
    left_to_jobs: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedDeletion:
    """What approving a review would do to one of its studies, judged now."""

    study_uid: str
    patient_id: str
    issuer: str
    instances: int
    bytes: int
    verdict: Verdict
    reason: str
    #: Copies the stores hold of the study's objects (current, earlier versions, compression
    #: originals, quarantined versions), and the stores they are deleted from.
    objects: int
    stores: tuple[str, ...]


async def plan_approval(
    archive: Archive,
    rules: Sequence[RetentionRuleSettings],
    review_id: int,
    today: dt.date | None = None,
) -> list[PlannedDeletion]:
    """What ``approve`` would delete, keep pending or leave alone, by the same guards, without
    changing anything (``vna retention approve --dry-run`` and its confirmation)."""
    today = today or dt.date.today()
    review = await load_review(archive.db, review_id)
    if review.state not in ("open", "approved"):
        raise InvalidRequest(f"retention review {review_id} is {review.state}")
    planned = []
    for item in review.items:
        if item["state"] not in ("due", "pending"):
            continue
        # A transaction that writes nothing: the study's row lock (as a deletion takes it) is
        # held only while its facts are read.
        async with archive.db.transaction() as conn:
            _, now, contents, _, copies = await _study_now(conn, archive, item["study_fk"], rules)
        check = check_deletion(_reviewed(item), now, today)
        planned.append(
            PlannedDeletion(
                study_uid=item["study_uid"],
                patient_id=item["patient_id"],
                issuer=item["issuer"],
                instances=contents["instances"] if contents else 0,
                bytes=contents["bytes"] if contents else 0,
                verdict=check.verdict,
                reason=check.reason,
                objects=sum(copies.values()),
                stores=tuple(_stores(archive)),
            )
        )
    return planned


async def approve(
    archive: Archive,
    rules: Sequence[RetentionRuleSettings],
    review_id: int,
    actor: str,
    today: dt.date | None = None,
    *,
    detail: dict[str, Any] | None = None,
) -> ApprovalReport:
    """Approve a review and delete what it lists that is due today (see the module notes);
    ``actor`` is the approver recorded on the review and on every deletion, ``detail`` goes
    into the approval's audit row.

    Re-running an approval carries on where an interrupted one stopped.
    """
    today = today or dt.date.today()
    review = await load_review(archive.db, review_id)
    async with archive.db.transaction() as conn:
        # Audited only by the approval that made the change: another one at the same moment
        # (it loaded the review while it was still open) carries on as a re-run does.
        if review.state == "open" and await conn.fetchval(q("review_approve"), review_id, actor):
            await _audit(
                conn,
                actor,
                "retention-approve",
                detail={
                    "review": review_id,
                    "as_of": review.as_of.isoformat(),
                    **(detail or {}),
                },
            )
        study_ids = [
            r["study_fk"] for r in await conn.fetch(q("review_items_to_execute"), review_id)
        ]
    report = ApprovalReport(review_id)
    for study_id in study_ids:
        await execute_item(archive, rules, review_id, study_id, actor, today, report)
    report.deleted_bytes += await rejections.execute_review(
        archive.db,
        review_id,
        actor,
        report.deleted_instances,
        report.skipped_instances,
        lambda key: delete_everywhere(archive, key),
    )
    return report


async def execute_pending(
    archive: Archive,
    rules: Sequence[RetentionRuleSettings],
    actor: str,
    today: dt.date | None = None,
) -> ApprovalReport:
    """Delete the approved studies whose date has come (the scheduler's part)."""
    today = today or dt.date.today()
    report = ApprovalReport(0)
    while True:
        async with archive.db.acquire() as conn:
            rows = await conn.fetch(q("review_pending_due"), today, 500)
        if not rows:
            return report
        progressed = False
        for row in rows:
            before = len(report.deleted) + len(report.skipped)
            await execute_item(
                archive, rules, row["review_fk"], row["study_fk"], actor, today, report
            )
            progressed |= len(report.deleted) + len(report.skipped) > before
        if not progressed:
            return report


async def execute_item(
    archive: Archive,
    rules: Sequence[RetentionRuleSettings],
    review_id: int,
    study_id: int,
    actor: str,
    today: dt.date,
    report: ApprovalReport,
) -> None:
    """Delete one reviewed study if every guard still passes (``lifecycle.policy.deletion``);
    record the outcome either way.  Deleted means deleted: every object the study holds or
    held goes, on every store, before this returns."""
    async with archive.db.transaction() as conn:
        item = await conn.fetchrow(q("review_item_lock"), review_id, study_id)
        if item is None or item["state"] not in ("due", "pending"):
            return  # carried out (or refused) by a concurrent approval
        uid = item["study_uid"]
        study, now, contents, keys, copies = await _study_now(conn, archive, study_id, rules)
        check = check_deletion(_reviewed(item), now, today)
        if check.verdict is Verdict.SKIP:
            await conn.execute(
                q("review_item_finish"), review_id, study_id, "skipped", check.reason
            )
            report.skipped.append((uid, check.reason))
            return
        decision = now.decision
        assert study is not None and contents is not None and decision is not None
        if check.verdict is Verdict.PENDING:
            if item["state"] == "due":
                await conn.execute(
                    q("review_item_finish"), review_id, study_id, "pending", check.reason
                )
            assert decision.retain_until is not None
            report.pending.append((uid, decision.retain_until))
            return
        history = await conn.fetchrow(q("study_history_delete"), study_id, uid)
        await changes.record_study(conn, "delete", study_id)  # before its rows go
        await conn.execute(q("study_delete"), study_id)
        await conn.execute(q("patient_delete_if_unused"), study["patient_fk"])
        await _audit(
            conn,
            actor,
            "retention-delete",
            patient_id=study["patient_id"],
            issuer=study["issuer"],
            study_uid=uid,
            detail={
                "review": review_id,
                "approved_by": item["approved_by"],
                "rule": decision.rule,
                "retain_until": str(decision.retain_until),
                "basis": decision.basis,
                "instances": contents["instances"],
                "bytes": contents["bytes"],
                "stored_bytes": contents["stored_bytes"],
                "sop_classes": list(contents["sop_classes"]),
                "earlier_versions": history["versions"],
                "quarantined_conflicts": history["conflicts"],
                "object_copies": sum(copies.values()),
                "stores": list(_stores(archive)),
            },
        )
        # The safety net for a crash between this commit and the deletions below: a worker
        # carries these out.  A compression original already has its job (queued for after
        # the grace period); it is done now too.
        await conn.execute(q("enqueue_object_deletes"), keys, 0.0)
        jobs = await conn.fetch(q("object_delete_jobs"), keys)
        await conn.execute(
            q("review_item_finish"),
            review_id,
            study_id,
            "deleted",
            f"deleted {contents['instances']} instances",
        )
        report.deleted.append(uid)
        report.deleted_bytes += contents["bytes"]
    # The catalogue no longer names the objects: remove them now, everywhere.
    done: list[int] = []
    for job in jobs:
        try:
            _, failed = await delete_everywhere(archive, job["object_key"])
        except VnaError as exc:  # the active store: the job stays queued and retries
            log.warning(
                "object %s left to the deletion job %d: %s", job["object_key"], job["id"], exc
            )
            report.left_to_jobs.append((archive.store.name, job["object_key"], str(exc)))
            continue
        # Counted from what the stores held when the study was judged (a delete of a copy
        # that is not there succeeds too).
        report.deleted_objects += max(copies.get(job["object_key"], 0) - len(failed), 0)
        report.left_to_jobs.extend((store, job["object_key"], err) for store, err in failed)
        if not failed:
            done.append(job["id"])
    if done:
        async with archive.db.acquire() as conn:
            await queue.mark_done(conn, done)


def _reviewed(item: Any) -> Reviewed:
    return _from_row(Reviewed, item)


def _stores(archive: Archive) -> dict[str, ObjectStore | None]:
    """Every store by name, the active one first; None for one that could not be opened."""
    stores: dict[str, ObjectStore | None] = {archive.store.name: archive.store}
    if archive.sites is not None:
        for name in store_urls(archive.settings):
            if name not in stores:
                stores[name] = (
                    None if name in archive.sites.unavailable else archive.sites.get(name)
                )
    return stores


async def _study_now(
    conn: asyncpg.Connection,
    archive: Archive,
    study_id: int,
    rules: Sequence[RetentionRuleSettings],
) -> tuple[Any, StudyNow, Any, list[str], dict[str, int]]:
    """The study's row (locked against a legal hold being set meanwhile), the facts its
    deletion is judged by, its contents, the keys of every object it holds or held, and how
    many copies of each the stores hold."""
    study = await conn.fetchrow(q("study_lock_for_delete"), study_id)
    if study is None:
        return None, StudyNow(exists=False), None, [], {}
    holds = await conn.fetch(
        q("active_holds_of_study"), study["study_uid"], study["patient_id"], study["issuer"]
    )
    facts = await load_facts(conn, [study_id])
    contents = await conn.fetchrow(q("study_contents"), study_id)
    keys = await study_object_keys(conn, study_id, study["study_uid"])
    locks, unchecked, copies = await _object_locks(archive, keys)
    now = StudyNow(
        exists=True,
        holds=[Hold(h["id"], h["scope"], h["reason"]) for h in holds],
        decision=retention(facts[study_id], rules),
        instances=contents["instances"],
        max_instance_id=contents["max_id"],
        locks=locks,
        unchecked_stores=unchecked,
    )
    return study, now, contents, keys, copies


async def study_object_keys(conn: asyncpg.Connection, study_id: int, study_uid: str) -> list[str]:
    """Every object the study holds or held: its instances' current objects, their earlier
    versions, its quarantined versions, and the uncompressed original of each (the content
    address of its SHA-256: compression leaves it for a grace period, lifecycle.compression)."""
    keys: set[str] = set()
    for r in await conn.fetch(q("study_objects"), study_id, study_uid):
        keys.add(r["object_key"])
        keys.add(content_key(r["sha256"]))
    return sorted(keys)


async def _object_locks(
    archive: Archive, keys: Sequence[str]
) -> tuple[list[ObjectLock], list[str], dict[str, int]]:
    """The objects under S3 Object Lock now, on any store; the stores that could not be asked;
    and how many copies of each object the stores hold."""
    locks: list[ObjectLock] = []
    unchecked: list[str] = []
    copies: dict[str, int] = {}
    now = dt.datetime.now(dt.UTC)
    for name, store in _stores(archive).items():
        if store is None:
            unchecked.append(name)
            continue
        try:
            for key in keys:
                info = await store.stat(key)
                if info is None:
                    continue
                copies[key] = copies.get(key, 0) + 1
                if info.object_legal_hold:
                    locks.append(ObjectLock(name, key, None))
                elif info.object_lock_until is not None and info.object_lock_until > now:
                    locks.append(ObjectLock(name, key, info.object_lock_until))
        except VnaError as exc:
            log.warning("store %s: cannot check Object Lock: %s", name, exc)
            unchecked.append(name)
    return locks, unchecked, copies


async def delete_everywhere(archive: Archive, key: str) -> tuple[int, list[tuple[str, str]]]:
    """Delete an object nothing refers to any more from the active store and from every other
    store at once; (copies deleted, [(store, error)] of those left to a deletion job).  An
    object in use again (the same bytes stored since) is kept everywhere."""
    async with archive.db.acquire() as conn:
        if await conn.fetchval(q("object_key_in_use"), key):
            return 0, []
    store = archive.store
    await store.delete(key)
    others = [name for name in _stores(archive) if name != store.name]
    async with archive.db.acquire() as conn:
        # Queued first, so a store that fails (or a crash) still gets its deletion later.
        jobs = {
            r["store"]: r["id"]
            for r in await conn.fetch(q("enqueue_replica_deletes"), key, store.name, others)
        }
    deleted, failed, done = 1, [], []
    for name in others:
        try:
            await replication.delete_copy(archive, name, key)
        except VnaError as exc:
            failed.append((name, str(exc)))
            continue
        deleted += 1
        if name in jobs:
            done.append(jobs[name])
    if done:
        async with archive.db.acquire() as conn:
            await queue.mark_done(conn, done)
    return deleted, failed


async def delete_object_if_unused(archive: Archive, key: str) -> bool:
    """The ``delete-object`` job: an object nothing refers to any more (a compression
    original after its grace period, a deletion an approval could not finish)."""
    async with archive.db.acquire() as conn:
        if await conn.fetchval(q("object_key_in_use"), key):
            return False
    deleted, _ = await delete_everywhere(archive, key)
    return deleted > 0


# --- legal holds ------------------------------------------------------------------------------


async def set_hold(
    db: Database,
    *,
    actor: str,
    reason: str,
    study_uid: str | None = None,
    patient_id: str | None = None,
    issuer: str | None = None,
) -> dict[str, Any]:
    """Put a study, or every study of a patient (now and to come), on legal hold."""
    if not reason.strip():
        raise InvalidRequest("a legal hold needs a reason (--reason)")
    if (study_uid is None) == (patient_id is None):
        raise InvalidRequest("a legal hold is on a study (--study) or a patient (--patient)")
    async with db.transaction() as conn:
        if study_uid is not None:
            study = await conn.fetchrow(q("hold_lock_study"), study_uid)
            if study is None:
                raise NotFound(f"study {study_uid} is not in the archive")
            hold = await conn.fetchrow(
                q("hold_insert"), "study", None, None, study_uid, reason, actor
            )
            who: tuple[str | None, str | None, str | None] = (
                study["patient_id"],
                study["issuer"],
                study_uid,
            )
        else:
            assert patient_id is not None
            issuer = await _resolve_issuer(conn, patient_id, issuer)
            await conn.fetch(q("hold_lock_patient"), patient_id, issuer)
            hold = await conn.fetchrow(
                q("hold_insert"), "patient", patient_id, issuer, None, reason, actor
            )
            who = (patient_id, issuer, None)
        await _audit(
            conn,
            actor,
            "legal-hold-set",
            patient_id=who[0],
            issuer=who[1],
            study_uid=who[2],
            detail={"hold": hold["id"], "scope": hold["scope"], "reason": reason},
        )
    return dict(hold)


async def _resolve_issuer(conn: asyncpg.Connection, patient_id: str, issuer: str | None) -> str:
    """Patient identity is PatientID + issuer; the issuer may be left out when only one
    patient has this PatientID."""
    rows = await conn.fetch(q("patients_by_id"), patient_id)
    if issuer is not None:
        if not any(r["issuer"] == issuer for r in rows):
            raise NotFound(f"patient {patient_id!r} (issuer {issuer!r}) is not in the archive")
        return issuer
    if not rows:
        raise NotFound(f"patient {patient_id!r} is not in the archive")
    if len(rows) > 1:
        issuers = ", ".join(repr(r["issuer"]) for r in rows)
        raise InvalidRequest(
            f"patient ID {patient_id!r} exists under several issuers ({issuers}); name one with"
            " --issuer"
        )
    found: str = rows[0]["issuer"]
    return found


async def holds_of_study(
    conn: asyncpg.Connection, study_uid: str, patient_id: str, issuer: str
) -> list[dict[str, Any]]:
    """The legal holds in force on a study: on it, on its patient, or on an identity linked
    to its patient (the web console's study page)."""
    rows = await conn.fetch(q("active_holds_of_study"), study_uid, patient_id, issuer)
    return [dict(r) for r in rows]


async def list_holds(db: Database, include_released: bool = False) -> list[dict[str, Any]]:
    async with db.acquire() as conn:
        return [dict(r) for r in await conn.fetch(q("hold_list"), include_released)]


async def release_hold(db: Database, hold_id: int, actor: str, reason: str = "") -> dict[str, Any]:
    async with db.transaction() as conn:
        hold = await conn.fetchrow(q("hold_release"), hold_id, actor)
        if hold is None:
            existing = await conn.fetchrow(q("hold_get"), hold_id)
            if existing is None:
                raise NotFound(f"no legal hold {hold_id}")
            raise InvalidRequest(f"legal hold {hold_id} was already released")
        await _audit(
            conn,
            actor,
            "legal-hold-release",
            patient_id=hold["patient_id"],
            issuer=hold["issuer"],
            study_uid=hold["study_uid"],
            detail={"hold": hold_id, "scope": hold["scope"], "reason": reason},
        )
    return dict(hold)


async def _audit(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    *,
    patient_id: str | None = None,
    issuer: str | None = None,
    study_uid: str | None = None,
    detail: dict[str, Any],
) -> None:
    await audit.record(
        conn,
        actor=actor,
        origin="lifecycle",
        action=action,
        patient_id=patient_id,
        issuer=issuer,
        study_uid=study_uid,
        detail=detail,
    )
