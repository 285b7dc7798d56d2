"""Viewer upkeep: what was stored before the viewer work is brought up to what frames and
bulk data need (issue 17), in the background and once.

- **Old compressed objects**: an object compressed at rest before the seekable form (one
  zstandard frame, ``.zst``) costs a whole decompression per frame.  The sweep queues a
  ``recompress`` job for each hot one (``lifecycle.compression.recompress_object``: verified
  against the catalogued SHA-256, switched in the catalogue, audited, the old object deleted
  after the grace period), at most ``BATCH`` per tick; the job's dedup key keeps it queued
  once, and an object whose job died is left to ``vna lifecycle retry``.  Colder tiers are
  left as they are (a rewrite there costs a restore or an early-deletion fee).
- **Instances without a layout**: those stored before layouts were recorded were listed by
  migration 0211 (``layout_backlog``).  The sweep queues a ``layout`` job for each, once; the
  job reads the object (checked against its SHA-256, no access time, no restore) and records
  its layout, so that its metadata carries the BulkDataURIs of all its bulk values and its
  frames are ranged reads.

Both run in the scheduler's catalogue-wide part (one process at a time) and are counted in
``vna lifecycle status``.  Writing a layout changes no object, so it is not audited; a
recompression is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lifecycle.engine import Engine
from lifecycle.policy.viewer_upkeep import LayoutAction, layout_action
from lifecycle.queue import Job, enqueue
from vna.catalog.queries import q
from vna.errors import InvalidRequest
from vna.retrieve import stored_instance

log = logging.getLogger(__name__)
LAYOUT = "layout"
RECOMPRESS = "recompress"
#: Jobs of each kind queued per tick at most: the backlog drains at the workers' pace
#: without flooding the queue ahead of the archive's own work.
BATCH = 200


@dataclass
class UpkeepSweep:
    recompressions_queued: int = 0
    layouts_queued: int = 0


async def sweep(engine: Engine) -> UpkeepSweep:
    """Queue conversions of old compressed objects and layouts of old instances (idempotent:
    what is queued already is not queued again)."""
    report = UpkeepSweep()
    async with engine.archive.db.transaction() as conn:
        for row in await conn.fetch(q("upkeep_single_frame_objects"), BATCH):
            key = row["object_key"]
            job = await enqueue(
                conn, RECOMPRESS, {"object_key": key}, dedup_key=f"recompress:{key}"
            )
            report.recompressions_queued += job is not None
        for row in await conn.fetch(q("upkeep_take_backlog"), BATCH):
            instance_id = int(row["instance_fk"])
            job = await enqueue(
                conn, LAYOUT, {"instance_id": instance_id}, dedup_key=f"layout:{instance_id}"
            )
            report.layouts_queued += job is not None
    if report.recompressions_queued or report.layouts_queued:
        log.info(
            "viewer upkeep: %d old compressed object(s) queued for the seekable form,"
            " %d instance(s) for their layout",
            report.recompressions_queued,
            report.layouts_queued,
        )
    return report


async def layout_job(engine: Engine, job: Job) -> None:
    """The ``layout`` job: record the layout of one instance listed by migration 0211, then
    take it off the list.  Idempotent: an instance deleted since or given a layout by a
    retrieve meanwhile is just taken off."""
    try:
        instance_id = int(job.payload["instance_id"])
    except (KeyError, TypeError, ValueError):
        raise InvalidRequest(f"job {job.id} ({job.kind}) has no instance_id") from None
    archive = engine.archive
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(q("upkeep_layout_instance"), instance_id)
    action = layout_action(
        exists=row is not None,
        has_layout=bool(row and row["has_layout"]),
        offline=bool(row and row["tier"] in archive.store.offline_tiers),
    )
    if action is LayoutAction.COMPUTE:
        assert row is not None
        layout = await archive.retriever.record_layout(stored_instance(row))
        if layout is None:
            log.info("instance %s: no layout maps onto its object (kept as is)", row["sop_uid"])
    elif action is LayoutAction.SKIP_OFFLINE:
        assert row is not None
        log.info(
            "instance %s: in the %s tier, layout left to its retrieve", row["sop_uid"], row["tier"]
        )
    async with archive.db.acquire() as conn:
        await conn.execute(q("upkeep_backlog_done"), instance_id)


async def status(conn: Any) -> dict[str, int]:
    """What is left of the upkeep (``vna lifecycle status``)."""
    row = await conn.fetchrow(q("upkeep_status"))
    return {
        "single_frame_objects": int(row["single_frame_objects"]),
        "layouts_missing": int(row["layouts_missing"]),
        "layouts_queued": int(row["layouts_queued"]),
    }
