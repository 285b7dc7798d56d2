"""Disaster recovery: replication status, failover drills, failover and failback.

* ``status``: per replica, what is verified on it, the backlog, the age of its oldest
  unreplicated instance (the RPO as it stands), the last verification and the last drill.
* ``drill``: as if the primary store were lost, without touching it or any production data:
  a retriever reading the replica only serves a sample (or all) of the instances, each checked
  bit-exact against the catalogued SHA-256; the RTO is the time from the start to the first
  verified read, the RPO the age of the oldest instance the replica does not hold yet, and
  every instance the replica should hold but does not serve intact is a defect.
* ``failover``: copy what the replica lacks while the primary still answers, then make the
  replica the active store (``dr_state``, read by every process when it opens the archive).
* ``failback``: copy back to the primary, verified, everything it lacks (what was written during
  the failover, objects rewritten meanwhile), carry out the deletions it missed, switch back,
  and copy once more what arrived during the switch: nothing is lost either way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from lifecycle import queue
from lifecycle.dr import replication
from lifecycle.engine import Reschedule
from vna.archive import Archive
from vna.catalog import audit
from vna.catalog.queries import q
from vna.errors import InvalidRequest, NotFound, OfflineError, StorageError, VnaError
from vna.recovery.policy import (
    PRIMARY,
    Finding,
    Outcome,
    drill_finding,
    drill_passed,
    expected_on_replica,
    judge_read,
    recovery_point_seconds,
)
from vna.recovery.replicas import record_copy, replica_lag
from vna.recovery.sites import CorruptSource, Sites, digest_object
from vna.retrieve import Retriever, stored_instance
from vna.storage.base import ObjectStore
from vna.storage.factory import open_store

log = logging.getLogger(__name__)
#: Instances read at once by a drill or a failback.
CONCURRENCY = 8
#: Instances listed by name in a drill report as not yet replicated.
LOST_LISTED = 1000
#: A drill without --full reads this many instances, chosen at random.
DEFAULT_SAMPLE = 100
#: With replication outside the archive (no [[replicas]]: S3 cross-region replication of the
#: bucket), an instance younger than this may legitimately be missing on the copy (S3
#: Replication Time Control replicates 99.99% of objects within 15 minutes).
EXTERNAL_GRACE_SECONDS = 900
#: A failover stops copying the backlog after this many failures in a row (the primary is
#: down: waiting on every object would only delay serving from the replica).
FAILOVER_GIVE_UP = 3
_BATCH = 500


def sites_of(archive: Archive) -> Sites:
    return replication.sites_of(archive)


async def _audit(
    conn: asyncpg.Connection, actor: str, action: str, outcome: str, detail: dict[str, Any]
) -> None:
    await audit.record(
        conn, actor=actor, origin="dr", action=action, outcome=outcome, detail=detail
    )


# --- status -----------------------------------------------------------------------------------


async def collect_status(archive: Archive) -> dict[str, Any]:
    sites = sites_of(archive)
    settings = archive.settings
    async with archive.db.acquire() as conn:
        state = await conn.fetchrow(q("dr_state_get"))
        totals = await conn.fetchrow(q("catalogue_totals"))
        now = await conn.fetchval(q("database_now"))
        jobs: dict[str, dict[str, int]] = {}
        for r in await conn.fetch(q("replication_jobs_by_store")):
            counts = jobs.setdefault(r["store"] or "?", {})
            name = "deletions" if r["kind"] == replication.REPLICA_DELETE else "copies"
            counts[f"{name}_{r['state']}"] = counts.get(f"{name}_{r['state']}", 0) + r["jobs"]
        replicas = []
        for replica in settings.replicas:
            entry: dict[str, Any] = {
                "name": replica.name,
                "storage_url": replica.storage_url,
                "role": "active" if replica.name == sites.active else "replica",
                "available": replica.name not in sites.unavailable,
            }
            if replica.name in sites.unavailable:
                entry["error"] = sites.unavailable[replica.name]
            if replica.name != sites.active:
                entry |= (await replica_lag(conn, replica.name, now)).as_dict()
            entry["jobs"] = jobs.get(replica.name, {})
            drill = await conn.fetchrow(q("drill_last"), replica.name)
            entry["last_drill"] = _drill_summary(drill) if drill else None
            replicas.append(entry)
        failover = None
        if sites.active != PRIMARY:
            since = await conn.fetchrow(q("received_since"), state["changed_at"])
            failover = {
                "since": _iso(state["changed_at"]),
                "by": state["changed_by"],
                "received_since_instances": since["instances"],
                "received_since_bytes": since["bytes"],
                "primary_jobs": jobs.get(PRIMARY, {}),
            }
    return {
        "at": _iso(now),
        "active_store": sites.active,
        "active_storage_url": sites.url_of(sites.active),
        "changed_at": _iso(state["changed_at"]),
        "changed_by": state["changed_by"],
        "catalogue_instances": totals["instances"],
        "catalogue_bytes": totals["bytes"],
        "catalogue_stored_bytes": totals["stored_bytes"],
        "replicas": replicas,
        "failover": failover,
    }


def _drill_summary(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "started_at": _iso(row["started_at"]),
        "mode": row["mode"],
        "checked": row["checked"],
        "verified": row["verified"],
        "defects": row["defects"],
        "rpo_seconds": row["rpo_seconds"],
        "rto_seconds": row["rto_seconds"],
        "lost_instances": row["lost_instances"],
    }


# --- drill ------------------------------------------------------------------------------------


@dataclass
class DrillRead:
    """One instance read from the replica."""

    sop_uid: str
    study_uid: str
    series_uid: str
    object_key: str
    received_at: str
    size: int
    outcome: str
    finding: str
    detail: str = ""


@dataclass
class DrillResult:
    store: str
    storage_url: str
    #: ``archive``: copies recorded by the archive's replication; ``external``: a copy kept
    #: by the storage itself (S3 cross-region replication), judged by age.
    tracking: str
    mode: str
    started_at: str
    finished_at: str = ""
    actor: str = ""
    checked: int = 0
    verified: int = 0
    bytes_read: int = 0
    read_seconds: float = 0.0
    #: From the start of the drill to the first instance served bit-exact by the replica.
    rto_seconds: float | None = None
    rpo_seconds: float = 0.0
    oldest_unreplicated: str | None = None
    lost_instances: int = 0
    lost_bytes: int = 0
    #: What a loss of the primary now would lose (oldest first, at most LOST_LISTED).
    lost: list[dict[str, Any]] = field(default_factory=list)
    defects: list[DrillRead] = field(default_factory=list)
    not_yet_replicated: list[DrillRead] = field(default_factory=list)
    catalogue_instances: int = 0
    max_rpo_seconds: float | None = None
    passed: bool = False
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def drill(
    archive: Archive,
    *,
    replica: str | None = None,
    full: bool = False,
    sample: int | None = None,
    actor: str,
    max_rpo_seconds: float | None = None,
    external_grace_seconds: float = EXTERNAL_GRACE_SECONDS,
) -> DrillResult:
    """Run a failover drill against a replica (see the module notes); recorded in the
    catalogue (``dr_drills``) and the audit trail.  Reads only the replica."""
    result = await measure_drill(
        archive,
        replica=replica,
        full=full,
        sample=sample,
        actor=actor,
        max_rpo_seconds=max_rpo_seconds,
        external_grace_seconds=external_grace_seconds,
    )
    await record_drill(archive, result)
    return result


async def measure_drill(
    archive: Archive,
    *,
    replica: str | None = None,
    full: bool = False,
    sample: int | None = None,
    actor: str,
    max_rpo_seconds: float | None = None,
    external_grace_seconds: float = EXTERNAL_GRACE_SECONDS,
) -> DrillResult:
    """The drill's measurements: reads from the replica, RTO, RPO, defects, the verdict.
    Writes nothing."""
    clock = time.monotonic()
    started = dt.datetime.now(dt.UTC)
    name, url, tracking = _drill_target(archive, replica)
    if sample is not None and sample < 1:
        raise InvalidRequest("--sample must be at least 1")
    if full and sample is not None:
        raise InvalidRequest("give --full or --sample, not both")
    result = DrillResult(
        store=name,
        storage_url=url,
        tracking=tracking,
        mode="full" if full else f"sample of {sample or DEFAULT_SAMPLE}",
        started_at=_iso(started) or "",
        actor=actor,
        max_rpo_seconds=max_rpo_seconds,
    )
    # Opened afresh, as a real failover would: nothing of the running archive's stores.
    store = await open_store(url, name=name)
    retriever = Retriever(archive.db, store, read_only=True)
    try:
        ids = await _drill_ids(archive, full, sample or DEFAULT_SAMPLE)
        slots = asyncio.Semaphore(CONCURRENCY)
        read_started = time.monotonic()

        async def one(instance_id: int) -> None:
            async with slots:
                await _drill_read(
                    archive,
                    retriever,
                    name,
                    tracking,
                    instance_id,
                    result,
                    clock,
                    external_grace_seconds,
                )

        await asyncio.gather(*(one(i) for i in ids))
        result.read_seconds = round(time.monotonic() - read_started, 3)
    finally:
        await retriever.close()
        await store.close()
    async with archive.db.acquire() as conn:
        result.catalogue_instances = int(await conn.fetchval(q("instance_count")))
        await _measure_loss(conn, result, dt.datetime.now(dt.UTC))
    result.defects.sort(key=lambda r: (r.study_uid, r.sop_uid))
    result.passed = drill_passed(len(result.defects), result.rpo_seconds, max_rpo_seconds)
    result.finished_at = _iso(dt.datetime.now(dt.UTC)) or ""
    return result


async def _measure_loss(conn: asyncpg.Connection, result: DrillResult, now: dt.datetime) -> None:
    """What a loss of the primary now would lose: the RPO and the instances."""
    if result.tracking == "archive":
        lag = await replica_lag(conn, result.store, now)
        result.lost_instances = lag.backlog
        result.lost_bytes = lag.backlog_bytes
        result.rpo_seconds = lag.rpo_seconds
        result.oldest_unreplicated = _iso(lag.oldest_unreplicated)
        result.lost = [
            {
                "sop_uid": r["sop_uid"],
                "study_uid": r["study_uid"],
                "series_uid": r["series_uid"],
                "accession_number": r["accession_number"],
                "received_at": _iso(r["received_at"]),
                "bytes": r["stored_size"],
            }
            for r in await conn.fetch(q("replication_lost"), result.store, LOST_LISTED)
        ]
        return
    # Nothing records the storage's own replication: what was read is the measure.
    missing = sorted(result.not_yet_replicated, key=lambda r: r.received_at)
    result.lost_instances = len(missing)
    result.lost_bytes = sum(r.size for r in missing)
    oldest = dt.datetime.fromisoformat(missing[0].received_at) if missing else None
    result.rpo_seconds = recovery_point_seconds(oldest, now)
    result.oldest_unreplicated = _iso(oldest)
    result.lost = [
        {
            "sop_uid": r.sop_uid,
            "study_uid": r.study_uid,
            "series_uid": r.series_uid,
            "accession_number": "",
            "received_at": r.received_at,
            "bytes": r.size,
        }
        for r in missing[:LOST_LISTED]
    ]


async def record_drill(archive: Archive, result: DrillResult) -> int:
    """Keep a measured drill (``dr_drills``, read by ``vna dr status`` and the report) and
    audit it; sets and returns its id."""
    async with archive.db.transaction() as conn:
        drill_id = int(
            await conn.fetchval(
                q("drill_record"),
                result.store,
                dt.datetime.fromisoformat(result.started_at),
                dt.datetime.now(dt.UTC),
                result.actor,
                result.mode,
                result.checked,
                result.verified,
                len(result.defects),
                result.rpo_seconds,
                result.rto_seconds,
                result.lost_instances,
                result.lost_bytes,
                jsonable({**result.as_dict(), "id": None}),
            )
        )
        result.id = drill_id
        await _audit(
            conn,
            result.actor,
            "dr-drill",
            "success" if result.passed else "failure",
            {
                "drill": drill_id,
                "store": result.store,
                "mode": result.mode,
                "checked": result.checked,
                "verified": result.verified,
                "defects": len(result.defects),
                "rpo_seconds": result.rpo_seconds,
                "rto_seconds": result.rto_seconds,
                "lost_instances": result.lost_instances,
            },
        )
    return drill_id


def _drill_target(archive: Archive, replica: str | None) -> tuple[str, str, str]:
    sites = sites_of(archive)
    names = list(sites.replica_names)
    if replica is not None:
        if replica not in names:
            known = ", ".join(names) or "none declared"
            raise InvalidRequest(f"--replica {replica!r} is not a declared replica ({known})")
        if replica == sites.active:
            raise InvalidRequest(f"replica {replica!r} is the active store (failed over to it)")
        return replica, sites.url_of(replica), "archive"
    targets = list(sites.targets())
    if len(targets) == 1:
        return targets[0], sites.url_of(targets[0]), "archive"
    if not names:
        # No replication by the archive: the store it is configured with is the copy under
        # test (the Terraform dr-drill task points storage_url at the DR bucket).
        return "storage_url", archive.settings.effective_storage_url, "external"
    raise InvalidRequest(f"name the replica to drill with --replica ({', '.join(targets)})")


async def _drill_ids(archive: Archive, full: bool, sample: int) -> list[int]:
    async with archive.db.acquire() as conn:
        if not full:
            return [r["id"] for r in await conn.fetch(q("fixity_sample"), sample)]
        ids: list[int] = []
        after = 0
        while rows := await conn.fetch(q("drill_instances_all"), after, 10_000):
            ids.extend(r["id"] for r in rows)
            after = ids[-1]
        return ids


async def _drill_read(
    archive: Archive,
    retriever: Retriever,
    store_name: str,
    tracking: str,
    instance_id: int,
    result: DrillResult,
    clock: float,
    grace: float,
) -> None:
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(q("drill_instance"), instance_id, store_name)
    if row is None:
        return  # deleted since it was chosen
    instance = stored_instance(row)
    digest = hashlib.sha256()
    size = 0
    detail = ""
    found = readable = decodable = True
    try:
        async for chunk in await retriever.open(instance):
            digest.update(chunk)
            size += len(chunk)
    except NotFound:
        found, detail = False, "not on the replica"
    except OfflineError as exc:
        readable, detail = False, str(exc)
    except StorageError as exc:
        detail = str(exc)
        # A compressed object that fails to decompress is damaged; anything else is the
        # store failing to serve it.
        if instance.compression == "zstd" and "compressed object" in detail:
            decodable = False
        else:
            readable = False
    outcome = judge_read(
        instance.sha256,
        instance.size,
        found=found,
        readable=readable,
        decodable=decodable,
        sha256=digest.hexdigest(),
        size=size,
    )
    if outcome is Outcome.CORRUPT and not detail:
        detail = f"read {size} bytes with sha256 {digest.hexdigest()}"
    now = dt.datetime.now(dt.UTC)
    expected = expected_on_replica(
        row["recorded"], row["received_at"], now, grace if tracking == "external" else None
    )
    finding = drill_finding(outcome, expected)
    result.checked += 1
    result.bytes_read += size
    if finding is Finding.OK:
        result.verified += 1
        if result.rto_seconds is None:
            result.rto_seconds = round(time.monotonic() - clock, 3)
        return
    read = DrillRead(
        sop_uid=instance.sop_uid,
        study_uid=instance.study_uid,
        series_uid=instance.series_uid,
        object_key=instance.object_key,
        received_at=_iso(row["received_at"]) or "",
        size=row["stored_size"],
        outcome=outcome.value,
        finding=finding.value,
        detail=detail,
    )
    if finding is Finding.DEFECT:
        result.defects.append(read)
    else:
        result.not_yet_replicated.append(read)


# --- failover ---------------------------------------------------------------------------------


@dataclass
class FailoverReport:
    from_store: str
    to_store: str
    copied: int = 0
    not_copied: int = 0
    errors: list[str] = field(default_factory=list)
    #: Instances the new active store lacks (readable again only when the primary is back).
    missing_instances: int = 0
    missing_bytes: int = 0
    oldest_missing: str | None = None


async def failover(archive: Archive, to: str, *, sync: bool = True, actor: str) -> FailoverReport:
    """Make replica ``to`` the active store.  With ``sync``, first copy to it what it lacks,
    for as long as the active store answers."""
    sites = sites_of(archive)
    if to not in sites.replica_names:
        known = ", ".join(sites.replica_names) or "none declared"
        raise InvalidRequest(f"--to {to!r} is not a declared replica ({known})")
    if to == sites.active:
        raise InvalidRequest(f"{to} is already the active store")
    sites.get(to)  # must be reachable from here
    report = FailoverReport(from_store=sites.active, to_store=to)
    if sync:
        failures_in_a_row = 0
        async for instance_id in _not_on(archive, to):
            try:
                await replication.replicate_instance(archive, instance_id, to)
                report.copied += 1
                failures_in_a_row = 0
            except (VnaError, Reschedule) as exc:
                report.not_copied += 1
                failures_in_a_row += 1
                if len(report.errors) < 20:
                    report.errors.append(f"instance {instance_id}: {exc}")
                if failures_in_a_row >= FAILOVER_GIVE_UP:
                    report.errors.append(
                        f"gave up copying after {FAILOVER_GIVE_UP} failures in a row"
                    )
                    break
    async with archive.db.transaction() as conn:
        lag = await replica_lag(conn, to)
        report.missing_instances = lag.backlog
        report.missing_bytes = lag.backlog_bytes
        report.oldest_missing = _iso(lag.oldest_unreplicated)
        await conn.fetchrow(q("dr_state_set"), to, actor)
        await _audit(
            conn,
            actor,
            "dr-failover",
            "success",
            {
                "from": report.from_store,
                "to": to,
                "copied": report.copied,
                "not_copied": report.not_copied,
                "missing_instances": report.missing_instances,
                "missing_bytes": report.missing_bytes,
                "rpo_seconds": lag.rpo_seconds,
            },
        )
    # This process's view (its archive keeps writing where it was opened: a command exits
    # here); every process reads dr_state when it opens the archive.
    sites.active = to
    return report


async def _not_on(archive: Archive, store: str) -> Any:
    """Ids of instances without a verified copy on ``store``, in id order."""
    after = 0
    while True:
        async with archive.db.acquire() as conn:
            rows = await conn.fetch(q("instances_not_on_store"), store, after, _BATCH)
        if not rows:
            return
        for r in rows:
            yield r["id"]
        after = rows[-1]["id"]


# --- failback ---------------------------------------------------------------------------------


@dataclass
class FailbackReport:
    from_store: str
    checked: int = 0
    present: int = 0
    copied: int = 0
    copied_bytes: int = 0
    deletions: int = 0
    passes: int = 0
    #: (SOP Instance UID, reason) of instances no store holds intact: not switched back.
    lost: list[tuple[str, str]] = field(default_factory=list)
    #: (SOP Instance UID, error) of copies that failed (a store error): not switched back.
    failed: list[tuple[str, str]] = field(default_factory=list)
    switched: bool = False
    forced: bool = False


async def failback(
    archive: Archive, *, verify: bool = False, force: bool = False, actor: str
) -> FailbackReport:
    """Resynchronise the primary from the active replica and make it active again.

    Each instance's object is checked on the primary (present with its stored size, or with
    ``verify`` read back and hashed) and copied there, verified, when it is not.  Verified
    copies on the primary are recorded (store ``primary`` in ``replicas``) so that a second
    pass takes only what arrived or changed during the first.  The switch happens only when
    every instance is on the primary (or with ``force``); one more pass after the switch takes
    what the servers still wrote to the replica meanwhile.
    """
    sites = sites_of(archive)
    if sites.active == PRIMARY:
        raise InvalidRequest("not failed over: the primary is the active store already")
    primary = sites.get(PRIMARY)
    try:
        await primary.stat("sha256/00/00/" + "0" * 64)  # reachable at all?
    except VnaError as exc:
        raise StorageError(f"the primary store does not answer: {exc}") from exc
    report = FailbackReport(from_store=sites.active)
    async with archive.db.acquire() as conn:
        # What a previous failback recorded on the primary says nothing about it now.
        await conn.execute(q("replicas_forget_store"), PRIMARY)
    report.deletions = await _primary_deletions(archive)
    for _ in range(5):
        report.passes += 1
        before = report.checked
        await _resync_pass(archive, sites, primary, verify, report)
        if report.checked == before or report.lost or report.failed:
            break
    if (report.lost or report.failed) and not force:
        return report
    report.forced = bool(report.lost or report.failed)
    async with archive.db.transaction() as conn:
        await conn.fetchrow(q("dr_state_set"), PRIMARY, actor)
        await _audit(
            conn,
            actor,
            "dr-failback",
            "failure" if report.forced else "success",
            {
                "from": report.from_store,
                "checked": report.checked,
                "copied": report.copied,
                "copied_bytes": report.copied_bytes,
                "deletions": report.deletions,
                "lost": [uid for uid, _ in report.lost[:100]],
                "failed": [uid for uid, _ in report.failed[:100]],
                "forced": report.forced,
            },
        )
    sites.active = PRIMARY
    report.switched = True
    report.passes += 1
    await _resync_pass(archive, sites, primary, verify, report)
    return report


async def _primary_deletions(archive: Archive) -> int:
    """Carry out the deletions the primary missed while failed over (approved retention
    deletions, originals replaced by compression)."""
    async with archive.db.acquire() as conn:
        rows = await conn.fetch(q("replica_deletes_for_store"), PRIMARY)
    done = 0
    for r in rows:
        await replication.delete_copy(archive, PRIMARY, r["object_key"])
        async with archive.db.acquire() as conn:
            await queue.settle(conn, [r["id"]])
        done += 1
    return done


async def _resync_pass(
    archive: Archive, sites: Sites, primary: ObjectStore, verify: bool, report: FailbackReport
) -> None:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(instance_id: int) -> None:
        async with slots:
            await _resync_instance(archive, sites, primary, instance_id, verify, report)

    batch: list[int] = []
    async for instance_id in _not_on(archive, PRIMARY):
        batch.append(instance_id)
        if len(batch) >= _BATCH:
            await asyncio.gather(*(one(i) for i in batch))
            batch = []
    await asyncio.gather(*(one(i) for i in batch))


async def _resync_instance(
    archive: Archive,
    sites: Sites,
    primary: ObjectStore,
    instance_id: int,
    verify: bool,
    report: FailbackReport,
) -> None:
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(q("replication_instance"), instance_id)
    if row is None:
        return
    report.checked += 1
    expected = replication.expected_of(row)
    key = expected.object_key
    try:
        info = await primary.stat(key)
        good: tuple[str, int] | None = None
        if info is not None and info.size == row["stored_size"]:
            if not verify and expected.compression == "none":
                # Present with its size; its digest was checked when it was written, and an
                # uncompressed object's key is its digest.
                good = (expected.sha256, info.size)
            else:
                digest = await digest_object(primary, key, expected.compression)
                if digest.judge(expected) is Outcome.VERIFIED:
                    good = (digest.stored_sha256, digest.stored_size)
        if good is not None:
            report.present += 1
            async with archive.db.acquire() as conn:
                await record_copy(conn, PRIMARY, key, good[0], good[1], instance_id)
            return
        digest, source = await replication.copy_from_any(archive, sites, primary, expected)
    except replication.NoGoodCopy as exc:
        report.lost.append((row["sop_uid"], str(exc)))
        return
    except CorruptSource as exc:
        report.lost.append((row["sop_uid"], str(exc)))
        return
    except (VnaError, Reschedule) as exc:
        report.failed.append((row["sop_uid"], str(exc)))
        return
    report.copied += 1
    report.copied_bytes += digest.stored_size
    async with archive.db.acquire() as conn:
        await record_copy(conn, PRIMARY, key, digest.stored_sha256, digest.stored_size, instance_id)
        if source != PRIMARY:
            # The source's content was just checked against the catalogue: a verified copy.
            await record_copy(
                conn, source, key, digest.stored_sha256, digest.stored_size, instance_id
            )


# --- helpers ----------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value
