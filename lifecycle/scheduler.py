"""Periodic catalogue-wide work, done by one lifecycle process at a time.

Every worker process ticks; an advisory lock lets one of them do the catalogue-wide part (the
others skip it), so running ``vna lifecycle run`` on several machines never evaluates twice.
A tick:

1. puts back jobs whose worker died (expired leases): every process, cheap;
2. recomputes the retention of studies computed under other rules (when the rules changed);
3. deletes the approved studies of look-ahead reviews whose date has come;
4. evaluates tiering when ``lifecycle.evaluate_every_seconds`` have passed, or when asked to
   evaluate as of another date than last time;
5. queues copies missing on the replicas every ``dr.sweep_every_seconds``
   (``lifecycle.dr.replication``);
6. drops finished jobs older than ``lifecycle.keep_done_hours``;
7. queues the viewer upkeep of old objects: single-frame compressed objects rewritten
   seekable, layouts of instances stored before layouts were (``lifecycle.viewer_upkeep``);
8. queues the forwards the ``[[forward]]`` rules make of the change feed's new entries
   (``lifecycle.forwarding``) and the ``[[notifications]]`` events
   (``lifecycle.notifications``);
9. moves committed changes into the change feed (every process: the feed's readers do it too,
   and the sequencer serialises itself) and drops entries older than
   ``changefeed.keep_days``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from lifecycle import forwarding, notifications, queue, retention, tiering, viewer_upkeep
from lifecycle.dr import replication
from lifecycle.engine import Engine
from lifecycle.policy.retention import rules_fingerprint
from vna.catalog import changes
from vna.catalog.queries import q

log = logging.getLogger(__name__)
#: Advisory lock key of the catalogue-wide part ("VNLC").
SCHEDULER_LOCK = 0x564E4C43
ACTOR = "lifecycle"


@dataclass
class TickReport:
    ran: bool = False
    reaped: list[tuple[int, str]] = field(default_factory=list)
    retention_recomputed: int = 0
    deleted: list[str] = field(default_factory=list)
    tiering: tiering.Evaluation | None = None
    changes_sequenced: int = 0
    changes_pruned: int = 0
    forwards_queued: int = 0
    notifications_made: int = 0
    upkeep: viewer_upkeep.UpkeepSweep | None = None


async def tick(engine: Engine, *, force_tiering: bool = False) -> TickReport:
    archive = engine.archive
    settings = engine.settings
    report = TickReport()
    async with archive.db.acquire() as conn:
        report.reaped = await queue.reap_expired(conn, settings.lifecycle.lease_seconds)
    for job_id, state in report.reaped:
        log.warning("job %d: its worker stopped renewing the lease; now %s", job_id, state)
    async with archive.db.acquire() as conn:
        report.changes_sequenced = await changes.sequence(conn)
    # A transaction-scoped lock, held by an open transaction on its own connection for the
    # pass: behind a transaction-mode pooler a session lock could be released on another
    # server connection than the one holding it (docs/scaling.md).
    async with archive.db.transaction() as lock:
        if not await lock.fetchval(q("scheduler_try_lock"), SCHEDULER_LOCK):
            return report  # another process is on it
        report.ran = True
        # New studies get theirs from their instance-stored jobs; only a change of rules
        # (or a first start) needs the catalogue-wide pass.  A review runs it regardless.
        fingerprint = rules_fingerprint(settings.retention_rules)
        async with archive.db.acquire() as conn:
            known = await conn.fetchrow(q("lifecycle_state_get"), "retention_rules")
        if known is None or known["value"] != fingerprint:
            report.retention_recomputed = await retention.recompute_stale(
                archive.db, settings.retention_rules
            )
            async with archive.db.acquire() as conn:
                await conn.execute(q("lifecycle_state_set"), "retention_rules", fingerprint)
            log.info(
                "retention rules %s: computed for %d studies",
                fingerprint,
                report.retention_recomputed,
            )
        # Deletions always at the real date, whatever --as-of says.
        executed = await retention.execute_pending(
            archive, settings.retention_rules, ACTOR, dt.date.today()
        )
        report.deleted = executed.deleted
        report.upkeep = await viewer_upkeep.sweep(engine)
        report.forwards_queued = await forwarding.queue_from_feed(engine)
        report.notifications_made = await notifications.queue_from_feed(engine)
        # Disaster recovery: queue the copies missing on the replicas (safety net).
        await replication.sweep_if_due(engine, force=force_tiering)
        if await _tiering_due(engine, force_tiering):
            report.tiering = await tiering.evaluate(
                archive.db, settings.tiering_rules, engine.today()
            )
            async with archive.db.acquire() as conn:
                await conn.execute(
                    q("lifecycle_state_set"), "tiering_as_of", engine.today().isoformat()
                )
            if report.tiering.queued:
                log.info("tiering: moves queued %s", report.tiering.queued)
        async with archive.db.acquire() as conn:
            await conn.execute(q("job_purge_done"), settings.lifecycle.keep_done_hours)
            horizon = dt.datetime.now(dt.UTC) - dt.timedelta(days=settings.changefeed.keep_days)
            report.changes_pruned = await changes.prune(conn, horizon)
            # What was sent or delivered goes with the feed entries that caused it, so that
            # neither table grows for ever (the audit trail keeps the disclosures).
            await forwarding.prune(conn, horizon)
            await notifications.prune(conn, horizon)
    return report


async def _tiering_due(engine: Engine, force: bool) -> bool:
    if force:
        return True
    async with engine.archive.db.acquire() as conn:
        row = await conn.fetchrow(q("lifecycle_state_get"), "tiering_as_of")
    if row is None or row["value"] != engine.today().isoformat():
        return True
    return float(row["age_seconds"]) >= engine.settings.lifecycle.evaluate_every_seconds
