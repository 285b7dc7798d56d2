"""The job kinds the lifecycle workers carry out, each idempotent.

* ``instance-stored`` (queued by ingest in the instance's own transaction: the outbox):
  compute the study's retain-until date, then compress the instance if the policy says so.
* ``tier-study``: move a study's objects to a colder tier (queued by tiering evaluation).
* ``restore``: make an offline object readable again (queued by a retrieve that hit it).
* ``recompress``: rewrite a single-frame compressed object in the seekable form (queued by a
  frame or bulk data retrieve that had to decompress it whole, and by the viewer upkeep sweep
  for the rest, ``lifecycle.viewer_upkeep``).
* ``layout``: record the layout of an instance stored before layouts were (queued by the
  viewer upkeep sweep from the list migration 0211 made).
* ``delete-object``: delete an object no instance refers to any more.
* ``forward``: send an instance to a ``[[forward]]`` rule's destination
  (``lifecycle.forwarding``, queued by the scheduler from the change feed).
* ``forward-study``: send a study's instances held by a rule with ``delay_seconds`` together,
  once the study has been quiet that long.
* ``notify``: deliver a study's pending ``[[notifications]]`` events in order
  (``lifecycle.notifications``).
* ``replicate`` / ``replica-delete``: copy an instance's object to a replica, verified, or
  delete a copy nothing uses any more (``lifecycle.dr.replication``).
* ``repair-object``: put a verified copy back over a copy a read found damaged or missing
  (``lifecycle.dr.read_repair``, queued by ``vna.retrieve`` with the record of the damage).
* ``commitment-report``: send a Storage Commitment report on a new association (queued with
  the request, ``vna.commitment.service``); waits for replication without using attempts,
  retried with back-off while the requester cannot be reached, recorded undeliverable when
  the attempts are used up.
"""

from __future__ import annotations

import logging

from lifecycle import forwarding, notifications, retention, viewer_upkeep
from lifecycle.compression import compress_instance, recompress_object
from lifecycle.dr import read_repair, replication
from lifecycle.engine import Engine, Handler, Reschedule
from lifecycle.queue import Job
from lifecycle.tiering import move_study, restore_object
from vna.catalog.commitments import REPORT_JOB
from vna.catalog.queries import q
from vna.commitment import service as commitment
from vna.commitment.sender import ReportNotDelivered
from vna.errors import InvalidRequest

log = logging.getLogger(__name__)


def _field(job: Job, name: str) -> object:
    try:
        return job.payload[name]
    except KeyError:
        # The same payload fails the same way: dead-letter it at once (not retriable).
        raise InvalidRequest(f"job {job.id} ({job.kind}) has no {name!r} in its payload") from None


async def instance_stored(engine: Engine, job: Job) -> None:
    instance_id = int(str(_field(job, "instance_id")))
    async with engine.archive.db.acquire() as conn:
        study_id = await conn.fetchval(q("study_of_instance"), instance_id)
        if study_id is None:
            return  # deleted since: nothing to do
        async with conn.transaction():
            await retention.refresh_studies(conn, [study_id], engine.settings.retention_rules)
    result = await compress_instance(engine, instance_id)
    if result.compressed:
        log.debug(
            "instance %d compressed %d -> %d bytes",
            instance_id,
            result.original_size,
            result.stored_size,
        )
    # Disaster recovery: copy the object the instance keeps (after compression) to every
    # replica; queued before this job completes (lifecycle.dr.replication).
    await replication.enqueue_instance(engine.archive, instance_id)


async def tier_study(engine: Engine, job: Job) -> None:
    await move_study(
        engine,
        int(str(_field(job, "study_id"))),
        str(_field(job, "tier")),
        str(job.payload.get("codec") or ""),
    )


async def restore(engine: Engine, job: Job) -> None:
    await restore_object(engine, str(_field(job, "object_key")))


async def recompress(engine: Engine, job: Job) -> None:
    result = await recompress_object(engine, str(_field(job, "object_key")))
    if not result.compressed:
        log.info("object %s not recompressed: %s", job.payload.get("object_key"), result.reason)


async def delete_object(engine: Engine, job: Job) -> None:
    await retention.delete_object_if_unused(engine.archive, str(_field(job, "object_key")))


async def commitment_report(engine: Engine, job: Job) -> None:
    # Idempotent: a report already recorded (by the DIMSE handler or an earlier run) is not
    # sent again.
    commitment_id = int(str(_field(job, "commitment_id")))
    try:
        later = await commitment.deliver(engine.archive, commitment_id)
    except ReportNotDelivered as exc:
        if job.attempts >= job.max_attempts:
            # The worker dead-letters the job after this: the request must not stay
            # "pending" for ever (`vna lifecycle retry` still sends it, and records it).
            await commitment.abandon(engine.archive, commitment_id, str(exc))
        raise
    if later is not None:
        raise Reschedule(later, "waiting for replication before reporting")


HANDLERS: dict[str, Handler] = {
    "instance-stored": instance_stored,
    "tier-study": tier_study,
    "restore": restore,
    "delete-object": delete_object,
    forwarding.FORWARD: forwarding.forward_job,
    forwarding.FORWARD_STUDY: forwarding.forward_study_job,
    notifications.NOTIFY: notifications.notify_job,
    "recompress": recompress,
    viewer_upkeep.LAYOUT: viewer_upkeep.layout_job,
    replication.REPLICATE: replication.replicate_job,
    replication.REPLICA_DELETE: replication.replica_delete_job,
    read_repair.REPAIR: read_repair.repair_job,
    REPORT_JOB: commitment_report,
}
