"""Failover and failback (``vna dr failover``, ``vna dr failback``).

* failover: copy what the replica lacks while the primary still answers, then make the replica
  the active store (``dr_state``, read by every process when it opens the archive).
* failback: copy back to the primary, verified, everything it lacks (what was written during
  the failover, objects rewritten meanwhile), carry out the deletions it missed, switch back,
  and copy once more what arrived during the switch: nothing is lost either way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from lifecycle import queue
from lifecycle.dr import replication
from lifecycle.dr.json_form import iso as _iso
from lifecycle.engine import Reschedule
from vna.archive import Archive
from vna.catalog import audit
from vna.catalog.queries import q
from vna.errors import InvalidRequest, StorageError, VnaError
from vna.recovery.policy import PRIMARY, Outcome
from vna.recovery.replicas import record_copy, replica_lag
from vna.recovery.sites import CorruptSource, Sites, digest_object
from vna.storage.base import ObjectStore

#: Instances copied at once by a failback.
CONCURRENCY = 8
#: A failover stops copying the backlog after this many failures in a row (the primary is
#: down: waiting on every object would only delay serving from the replica).
FAILOVER_GIVE_UP = 3
_BATCH = 500


async def _audit(
    conn: asyncpg.Connection, actor: str, action: str, outcome: str, detail: dict[str, Any]
) -> None:
    await audit.record(
        conn, actor=actor, origin="dr", action=action, outcome=outcome, detail=detail
    )


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
    sites = replication.sites_of(archive)
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
    sites = replication.sites_of(archive)
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
