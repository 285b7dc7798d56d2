"""Replication of every stored object to the ``[[replicas]]``, verified, through the job queue.

Work reaches a replica three ways, so that none can be lost:

1. the ``instance-stored`` handler (the ingest outbox) queues one ``replicate`` job per
   replica in its own transaction, after compression, so the object copied is the one the
   instance keeps;
2. the scheduler's sweep (every ``dr.sweep_every_seconds``) queues a job for every instance
   whose current object has no verified copy on a replica: a handler that failed before
   queueing, an object rewritten later (compression gives it a new key), a replica added to
   the configuration, a rebuilt catalogue;
3. a ``replicate`` job reads the instance's object key again after recording its copy and
   copies again when it changed meanwhile.

A ``replicate`` job copies from the active store (or, when that lacks the object or holds a
damaged one, from another store with a good copy, which is then put back on the active store
too), checks that the bytes are the catalogued instance, writes them to the replica, reads them
back and compares SHA-256, and records the copy in ``replicas``.  A ``replica-delete`` job
removes a copy nothing uses any more: queued when the active store's object is deleted
(approved retention deletions, originals replaced by compression; ``lifecycle.retention``)
and by the sweep for copies left over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lifecycle.engine import Reschedule
from lifecycle.queue import Job, enqueue
from vna.catalog.queries import q
from vna.errors import InvalidRequest, NotFound, OfflineError, StorageError, VnaError
from vna.recovery.policy import PRIMARY, Outcome, read_order
from vna.recovery.replicas import lock_object, record_copy
from vna.recovery.sites import (
    CorruptSource,
    Digest,
    Expected,
    Sites,
    TargetFailed,
    copy_object,
    digest_object,
    store_urls,
)
from vna.storage.base import ObjectStore

if TYPE_CHECKING:
    from lifecycle.engine import Engine
    from vna.archive import Archive

log = logging.getLogger(__name__)
REPLICATE = "replicate"
REPLICA_DELETE = "replica-delete"
#: Jobs queued per replica by one sweep; the next sweep queues the following ones.
SWEEP_LIMIT = 10_000
#: Copies of one instance in one job when its object keeps changing under it.
_MAX_ROUNDS = 3


class NoGoodCopy(CorruptSource):
    """No reachable store holds the catalogued content: not retried (a dead job for the
    administrator, and a finding of `vna verify` / `vna dr drill`)."""


def sites_of(archive: Archive) -> Sites:
    if archive.sites is None:
        raise StorageError("the archive was opened without its replica stores")
    return archive.sites


def expected_of(row: object) -> Expected:
    return Expected(
        object_key=row["object_key"],  # type: ignore[index]
        compression=row["compression"],  # type: ignore[index]
        sha256=row["sha256"],  # type: ignore[index]
        size=row["size"],  # type: ignore[index]
    )


# --- queueing -----------------------------------------------------------------------------------


async def enqueue_instance(archive: Archive, instance_id: int) -> int:
    """Queue the replication of one instance to every replica (one transaction); how many
    jobs were queued (a job already queued for the same instance and replica is kept)."""
    targets = sites_of(archive).targets()
    if not targets:
        return 0
    queued = 0
    async with archive.db.transaction() as conn:
        for target in targets:
            job_id = await enqueue(
                conn,
                REPLICATE,
                {"instance_id": instance_id, "store": target},
                dedup_key=f"replicate:{target}:{instance_id}",
            )
            queued += job_id is not None
    return queued


@dataclass
class SweepReport:
    #: Replicate jobs queued, by replica.
    queued: dict[str, int] = field(default_factory=dict)
    #: Deletions of copies nothing uses any more.
    orphans: int = 0


async def sweep(archive: Archive, limit: int = SWEEP_LIMIT) -> SweepReport:
    """Queue the copies missing on every replica, and the deletion of copies left over."""
    report = SweepReport()
    async with archive.db.acquire() as conn:
        for target in sites_of(archive).targets():
            rows = await conn.fetch(q("replication_sweep_enqueue"), target, limit)
            report.queued[target] = len(rows)
        report.orphans = len(await conn.fetch(q("replication_orphans_enqueue"), limit))
    queued = sum(report.queued.values())
    if queued or report.orphans:
        log.info(
            "replication sweep: %d copies queued (%s), %d leftover copies to delete",
            queued,
            ", ".join(f"{k} {v}" for k, v in sorted(report.queued.items())),
            report.orphans,
        )
    return report


async def sweep_if_due(engine: Engine, *, force: bool = False) -> SweepReport | None:
    """The scheduler's part: a sweep every ``dr.sweep_every_seconds`` (or when forced)."""
    archive = engine.archive
    if not archive.settings.replicas:
        return None
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(q("lifecycle_state_get"), "replication_sweep")
    if row is not None and not force:
        if float(row["age_seconds"]) < archive.settings.dr.sweep_every_seconds:
            return None
    report = await sweep(archive)
    async with archive.db.acquire() as conn:
        await conn.execute(q("lifecycle_state_set"), "replication_sweep", "done")
    return report


# --- copying ------------------------------------------------------------------------------------


async def replicate_instance(archive: Archive, instance_id: int, target_name: str) -> str:
    """Make sure replica ``target_name`` holds a verified copy of the instance's current
    object; what was done (``copied``, ``present``, ``already``, ``gone``, ...)."""
    sites = sites_of(archive)
    if target_name not in sites.replica_names:
        return "not a replica"  # removed from the configuration since the job was queued
    if target_name == sites.active:
        return "active"  # failed over to it: it is written directly
    target = sites.get(target_name)
    outcome = "already"
    for _ in range(_MAX_ROUNDS):
        async with archive.db.acquire() as conn:
            row = await conn.fetchrow(q("replication_instance"), instance_id)
            if row is None:
                return "gone"  # deleted since
            if await conn.fetchval(q("replica_verified"), target_name, row["object_key"]):
                return outcome
        expected = expected_of(row)
        digest, outcome = await _ensure_copy(archive, sites, target, expected)
        async with archive.db.transaction() as conn:
            await lock_object(conn, target_name, expected.object_key)
            # A deletion of this object on the replica may have run between the copy and
            # this lock (the instance was deleted and its bytes re-sent meanwhile): record
            # the copy only if it is still there, otherwise copy again.
            info = await target.stat(expected.object_key)
            if info is None or info.size != digest.stored_size:
                outcome = "again"
                continue
            await record_copy(
                conn,
                target_name,
                expected.object_key,
                digest.stored_sha256,
                digest.stored_size,
                instance_id,
            )
        # Compression may have given the instance a new object while this one was copied.
    raise StorageError(
        f"instance {instance_id} changed while it was being copied to {target_name}; retried"
    )


async def _ensure_copy(
    archive: Archive, sites: Sites, target: ObjectStore, expected: Expected
) -> tuple[Digest, str]:
    key = expected.object_key
    try:
        if await target.stat(key) is not None:
            present = await digest_object(target, key, expected.compression)
            if present.judge(expected) is Outcome.VERIFIED:
                if await sites.active_store.stat(key) is None:
                    # Written to the replica while it was active (a process that had not
                    # been restarted after a failback): the active store needs it too.
                    await _repair_active(archive, sites, target, expected)
                return present, "present"
    except NotFound:
        pass
    digest, source = await copy_from_any(archive, sites, target, expected)
    log.debug("object %s copied from %s to %s", key, source, target.name)
    return digest, "copied"


async def copy_from_any(
    archive: Archive, sites: Sites, target: ObjectStore, expected: Expected
) -> tuple[Digest, str]:
    """Copy the object to ``target`` from the first store holding the catalogued content: the
    active store, then the others in read order.  When the active store lacks the object or
    holds a damaged one, the good copy is put back on it as well.

    Raises NoGoodCopy (not retried) when every store answered and none holds the content,
    StorageError (retried) when a store that might hold it could not be read.
    """
    names = [sites.active, *read_order(sites.active, sites.replica_names)]
    problems: list[str] = []
    transient = False
    active_bad = False
    for name in names:
        if name == target.name:
            continue
        try:
            source = sites.get(name)
            digest = await copy_object(source, target, expected, archive.incoming)
        except NotFound:
            problems.append(f"{name}: missing")
            active_bad |= name == sites.active
            continue
        except CorruptSource as exc:
            problems.append(f"{name}: {exc}")
            active_bad |= name == sites.active
            continue
        except OfflineError as exc:
            if name == sites.active:
                # An object tiered to an offline class: ask for a readable copy, come back.
                await source.restore(expected.object_key, archive.settings.lifecycle.restore_days)
                raise Reschedule(600, f"object {expected.object_key} is being restored") from exc
            problems.append(f"{name}: offline")
            transient = True
            continue
        except TargetFailed:
            raise  # the replica itself failed: no other source would help
        except StorageError as exc:
            problems.append(f"{name}: {exc}")
            transient = True
            continue
        if active_bad and name != sites.active:
            await _repair_active(archive, sites, source, expected)
        return digest, name
    message = f"object {expected.object_key}: no store holds the catalogued content" + (
        f" ({'; '.join(problems)})" if problems else ""
    )
    if transient:
        raise StorageError(message)
    raise NoGoodCopy(message)


async def _repair_active(
    archive: Archive, sites: Sites, source: ObjectStore, expected: Expected
) -> None:
    """Put a good copy back on the active store (it lacked the object or held damaged bytes:
    after a failback, a write that reached another store, a damaged disk)."""
    try:
        await copy_object(source, sites.active_store, expected, archive.incoming)
    except VnaError as exc:
        log.error(
            "object %s is missing or damaged on the active store %s and could not be restored"
            " from %s: %s",
            expected.object_key,
            sites.active,
            source.name,
            exc,
        )
        return
    log.warning(
        "object %s was missing or damaged on the active store %s: restored from %s",
        expected.object_key,
        sites.active,
        source.name,
    )


# --- deleting copies -----------------------------------------------------------------------------


async def delete_copy(archive: Archive, store_name: str, object_key: str) -> bool:
    """Delete a copy nothing uses any more; False when it is in use again (kept)."""
    sites = sites_of(archive)
    if store_name not in store_urls(archive.settings):
        # The replica was removed from the configuration: only the record goes.
        async with archive.db.acquire() as conn:
            await conn.execute(q("replica_forget"), store_name, object_key)
        return False
    store = sites.get(store_name)
    async with archive.db.transaction() as conn:
        await lock_object(conn, store_name, object_key)
        if await conn.fetchval(q("object_key_in_use"), object_key):
            return False  # the same bytes were stored again since
        await store.delete(object_key)
        await conn.execute(q("replica_forget"), store_name, object_key)
    return True


# --- job handlers ------------------------------------------------------------------------------


def _payload(job: Job, name: str) -> str:
    try:
        return str(job.payload[name])
    except KeyError:
        raise InvalidRequest(f"job {job.id} ({job.kind}) has no {name!r} in its payload") from None


async def replicate_job(engine: Engine, job: Job) -> None:
    instance_id = int(_payload(job, "instance_id"))
    await replicate_instance(engine.archive, instance_id, _payload(job, "store"))


async def replica_delete_job(engine: Engine, job: Job) -> None:
    await delete_copy(engine.archive, _payload(job, "store"), _payload(job, "object_key"))


__all__ = [
    "PRIMARY",
    "REPLICATE",
    "REPLICA_DELETE",
    "NoGoodCopy",
    "SweepReport",
    "copy_from_any",
    "delete_copy",
    "enqueue_instance",
    "replica_delete_job",
    "replicate_instance",
    "replicate_job",
    "sweep",
    "sweep_if_due",
]
