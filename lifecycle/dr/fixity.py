"""Fixity checks (``vna verify``): read objects back and compare them with the catalogue.

Each instance's object is read from a store (the active one, or a replica) and what it holds
(decompressed, for a compressed object) must have the SHA-256 and size the catalogue recorded
when the instance was received.  Mismatches and missing objects are reported and recorded in
the audit trail: one summary record per run and one per instance that failed, with its study,
so that the trail of a study shows that its bytes were found damaged and when.

On a replica, a copy found missing or damaged also loses its record of verification, so that
replication copies it again (the sweep of ``vna lifecycle run``).  On the active store, with
``repair``, a missing or damaged object is copied back from the first replica holding the
catalogued content (verified like every copy).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vna.catalog import audit
from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.errors import InvalidRequest, NotFound, OfflineError, StorageError, VnaError
from vna.recovery.policy import PRIMARY, Outcome
from vna.recovery.sites import Expected, Sites, copy_object, digest_object
from vna.storage.base import ObjectStore

#: Instances read at once.
CONCURRENCY = 8
#: A check without --all reads this many instances, chosen at random.
DEFAULT_SAMPLE = 1000  # vna.cli.recovery.VERIFY_SAMPLE
#: Problems named one by one in the summary audit record (each also has its own record).
_AUDIT_LISTED = 100


@dataclass
class Problem:
    outcome: str
    sop_uid: str
    study_uid: str
    series_uid: str
    object_key: str
    detail: str = ""
    #: The replica a good copy was restored from (``repair``).
    repaired_from: str = ""


@dataclass
class FixityReport:
    store: str
    mode: str
    started_at: str
    finished_at: str = ""
    checked: int = 0
    verified: int = 0
    bytes_read: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: Records of verified copies removed (replica copies found missing or damaged).
    forgotten: int = 0
    #: Objects of the active store restored from a replica (``repair``).
    repaired: int = 0
    #: Keys in the store that no catalogue row refers to (``--all`` only): left by a crash
    #: between the object write and the catalogue commit, or by an interrupted deletion.
    #: Listed, never deleted: an administrator decides (or ``vna catalogue rebuild`` adopts).
    orphans: list[str] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for p in self.problems if p.outcome == outcome.value)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def verify(
    db: Database,
    sites: Sites,
    *,
    sample: int | None = None,
    every: bool = False,
    store_name: str | None = None,
    repair: bool = False,
    scratch_dir: Path | None = None,
    actor: str,
) -> FixityReport:
    """Check a sample of instances (``sample``, default DEFAULT_SAMPLE) or ``every`` one."""
    if sample is not None and sample < 1:
        raise InvalidRequest("--sample must be at least 1")
    if every and sample is not None:
        raise InvalidRequest("give --sample or --all, not both")
    name = store_name or sites.active
    store = sites.get(name)
    report = FixityReport(
        store=name,
        mode="all" if every else f"sample of {sample or DEFAULT_SAMPLE}",
        started_at=_now(),
    )
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(instance_id: int) -> None:
        async with slots:
            problem = await _check(db, store, instance_id, report, forget=name != sites.active)
            if problem is not None and repair and name == sites.active:
                await _repair(sites, problem, scratch_dir or Path(tempfile.gettempdir()), report)

    async with db.acquire() as conn:
        if not every:
            ids = [r["id"] for r in await conn.fetch(q("fixity_sample"), sample or DEFAULT_SAMPLE)]
    if not every:
        await asyncio.gather(*(one(i) for i in ids))
    else:
        after = 0
        while True:
            async with db.acquire() as conn:
                ids = [r["id"] for r in await conn.fetch(q("fixity_batch"), after, 1000)]
            if not ids:
                break
            await asyncio.gather(*(one(i) for i in ids))
            after = ids[-1]
    if every:
        report.orphans = await _orphans(db, store, name)
    report.problems.sort(key=lambda p: (p.study_uid, p.sop_uid))
    report.finished_at = _now()
    await _record(db, report, actor)
    return report


async def _orphans(db: Database, store: ObjectStore, name: str) -> list[str]:
    """Keys of ``store`` unknown to the catalogue, checked a thousand at a time."""
    orphans: list[str] = []
    batch: list[str] = []

    async def flush() -> None:
        async with db.acquire() as conn:
            known = {r["k"] for r in await conn.fetch(q("known_object_keys"), batch, name)}
        orphans.extend(k for k in batch if k not in known)
        batch.clear()

    async for key in store.iter_keys("sha256/"):
        batch.append(key)
        if len(batch) >= 1000:
            await flush()
    if batch:
        await flush()
    return sorted(orphans)


async def _check(
    db: Database, store: ObjectStore, instance_id: int, report: FixityReport, *, forget: bool
) -> tuple[Problem, Expected] | None:
    async with db.acquire() as conn:
        row = await conn.fetchrow(q("fixity_instance"), instance_id)
    if row is None:
        return None  # deleted since it was chosen
    expected = Expected(row["object_key"], row["compression"], row["sha256"], row["size"])
    detail = ""
    try:
        digest = await digest_object(store, expected.object_key, expected.compression)
        outcome = digest.judge(expected)
        report.bytes_read += digest.stored_size
        if outcome is not Outcome.VERIFIED:
            detail = digest.error or (
                f"holds {digest.content_size} bytes with sha256 {digest.content_sha256},"
                f" catalogued {expected.size} bytes with sha256 {expected.sha256}"
            )
    except NotFound:
        outcome = Outcome.MISSING
    except (StorageError, OfflineError) as exc:
        outcome, detail = Outcome.UNREADABLE, str(exc)
    report.checked += 1
    if outcome is Outcome.VERIFIED:
        report.verified += 1
        return None
    problem = Problem(
        outcome=outcome.value,
        sop_uid=row["sop_uid"],
        study_uid=row["study_uid"],
        series_uid=row["series_uid"],
        object_key=expected.object_key,
        detail=detail,
    )
    report.problems.append(problem)
    async with db.transaction() as conn:
        await audit.record(
            conn,
            actor="fixity",
            origin="verify",
            action="fixity-check",
            outcome="failure",
            patient_id=row["patient_id"],
            issuer=row["issuer"],
            study_uid=row["study_uid"],
            series_uid=row["series_uid"],
            sop_uid=row["sop_uid"],
            detail={
                "store": store.name,
                "outcome": outcome.value,
                "object_key": expected.object_key,
                "detail": detail,
            },
        )
        if forget and outcome in (Outcome.MISSING, Outcome.CORRUPT):
            status = await conn.execute(q("replica_forget"), store.name, expected.object_key)
            report.forgotten += status.split()[-1] != "0"
    return problem, expected


async def _repair(
    sites: Sites, found: tuple[Problem, Expected], scratch_dir: Path, report: FixityReport
) -> None:
    problem, expected = found
    if problem.outcome not in (Outcome.MISSING.value, Outcome.CORRUPT.value):
        return
    for source in sites.fallbacks():
        try:
            await copy_object(source, sites.active_store, expected, scratch_dir)
        except VnaError:
            continue
        problem.repaired_from = source.name
        report.repaired += 1
        return


async def _record(db: Database, report: FixityReport, actor: str) -> None:
    async with db.acquire() as conn:
        await audit.record(
            conn,
            actor=actor,
            origin="verify",
            action="fixity-check",
            outcome="success" if report.ok else "failure",
            detail={
                "store": report.store,
                "mode": report.mode,
                "checked": report.checked,
                "verified": report.verified,
                "corrupt": report.count(Outcome.CORRUPT),
                "missing": report.count(Outcome.MISSING),
                "unreadable": report.count(Outcome.UNREADABLE),
                "orphans": report.orphans[:_AUDIT_LISTED],
                "problems": [
                    {"sop_uid": p.sop_uid, "outcome": p.outcome, "object_key": p.object_key}
                    for p in report.problems[:_AUDIT_LISTED]
                ],
            },
        )


def render_text(report: FixityReport) -> str:
    lines = [
        f"fixity check of store {report.store} ({report.mode}): {report.checked:,} instances"
        f" read, {report.verified:,} intact, {report.count(Outcome.CORRUPT):,} corrupt,"
        f" {report.count(Outcome.MISSING):,} missing, {report.count(Outcome.UNREADABLE):,}"
        " unreadable",
    ]
    for p in report.problems[:100]:
        lines.append(f"  {p.outcome:10} {p.sop_uid} (study {p.study_uid}) {p.object_key}")
        if p.repaired_from:
            lines.append(f"             repaired: copied back from {p.repaired_from}")
        if p.detail:
            lines.append(f"             {p.detail}")
    if len(report.problems) > 100:
        lines.append(f"  ... and {len(report.problems) - 100} more (see the audit trail)")
    if report.forgotten:
        lines.append(
            f"  {report.forgotten} damaged or missing replica copies will be copied again by"
            " `vna lifecycle run`"
        )
    if report.repaired:
        lines.append(f"  {report.repaired} object(s) restored from a replica")
    elif report.problems and report.store == PRIMARY:
        lines.append("  `vna verify --repair` copies good versions back from the replicas")
    if report.orphans:
        lines.append(
            f"  {len(report.orphans)} orphan object(s) no catalogue row refers to (an instance"
            " being stored at this moment can show here too):"
        )
        lines.extend(f"    {key}" for key in report.orphans[:100])
    lines.append("recorded in the audit trail (action fixity-check)")
    return "\n".join(lines)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
