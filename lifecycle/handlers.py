"""The job kinds the lifecycle workers carry out, each idempotent.

* ``instance-stored`` (queued by ingest in the instance's own transaction: the outbox):
  compute the study's retain-until date, then compress the instance if the policy says so.
* ``tier-study``: move a study's objects to a colder tier (queued by tiering evaluation).
* ``restore``: make an offline object readable again (queued by a retrieve that hit it).
* ``delete-object``: delete an object no instance refers to any more.
* ``replicate`` / ``replica-delete``: copy an instance's object to a replica, verified, or
  delete a copy nothing uses any more (``lifecycle.dr.replication``).
"""

from __future__ import annotations

import logging

from lifecycle import retention
from lifecycle.compression import compress_instance
from lifecycle.dr import replication
from lifecycle.engine import Engine, Handler
from lifecycle.queue import Job
from lifecycle.tiering import move_study, restore_object
from vna.catalog.queries import q
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
    await move_study(engine, int(str(_field(job, "study_id"))), str(_field(job, "tier")))


async def restore(engine: Engine, job: Job) -> None:
    await restore_object(engine, str(_field(job, "object_key")))


async def delete_object(engine: Engine, job: Job) -> None:
    await retention.delete_object_if_unused(engine.archive, str(_field(job, "object_key")))


HANDLERS: dict[str, Handler] = {
    "instance-stored": instance_stored,
    "tier-study": tier_study,
    "restore": restore,
    "delete-object": delete_object,
    replication.REPLICATE: replication.replicate_job,
    replication.REPLICA_DELETE: replication.replica_delete_job,
}
