"""Repair of a copy a read found damaged (``repair-object`` jobs, queued by ``vna.retrieve``).

A retrieve that finds the active store's copy of an object missing, unreadable or not the
catalogued content serves the instance from a replica and records the damage (table
``read_repairs``, an audit row) with this job in one transaction.  The job reads the copy
back: intact (the store failed for a moment), the record is closed; otherwise a verified copy
is put back from the first other store holding the catalogued content (``copy_object``: the
source is checked before anything is written, the copy read back after), in the tier the
catalogue places the instance in.  Idempotent: a second run finds the copy intact.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lifecycle.dr.replication import NoGoodCopy, sites_of
from lifecycle.queue import Job
from vna.catalog import audit
from vna.catalog.queries import q
from vna.errors import InvalidRequest, NotFound, OfflineError, StorageError
from vna.recovery.policy import PRIMARY, Outcome
from vna.recovery.sites import CorruptSource, Expected, TargetFailed, copy_object, digest_object
from vna.tiers import TIERS

if TYPE_CHECKING:
    from lifecycle.engine import Engine
    from vna.archive import Archive

log = logging.getLogger(__name__)
REPAIR = "repair-object"


async def repair_copy(archive: Archive, store_name: str, object_key: str) -> str:
    """Make the copy of ``object_key`` on ``store_name`` the catalogued content again; what was
    found: ``intact``, ``repaired`` or ``gone`` (no instance uses the object any more).

    Raises NoGoodCopy (not retried: the record stays open for the administrator) when every
    other store answered and none holds the content, StorageError (retried) otherwise.
    """
    sites = sites_of(archive)
    store = sites.get(store_name)
    async with archive.db.acquire() as conn:
        row = await conn.fetchrow(q("object_subject"), object_key)
    if row is None:
        await _resolve(archive, store_name, object_key, "gone", None, row)
        return "gone"
    expected = Expected(object_key, row["compression"], row["sha256"], row["size"])
    try:
        found = (await digest_object(store, object_key, expected.compression)).judge(expected)
    except NotFound:
        found = Outcome.MISSING
    except OfflineError:
        found = Outcome.UNREADABLE  # an offline class cannot be judged: copy a good one over it
    if found is Outcome.VERIFIED:
        await _resolve(archive, store_name, object_key, "intact", None, row)
        return "intact"
    names = [PRIMARY, *sites.replica_names]
    problems: list[str] = []
    transient = False
    for name in names:
        if name == store_name:
            continue
        try:
            source = sites.get(name)
            await copy_object(source, store, expected, archive.incoming)
        except (NotFound, CorruptSource) as exc:
            problems.append(f"{name}: {exc}")
            continue
        except TargetFailed:
            raise  # the damaged store itself fails: retried
        except (StorageError, OfflineError) as exc:
            problems.append(f"{name}: {exc}")
            transient = True
            continue
        tier = row["tier"]
        if tier != TIERS[0]:
            # The copy was written to the warmest tier; the catalogue places it colder.
            await store.set_tier(object_key, tier)
        await _resolve(archive, store_name, object_key, "repaired", name, row)
        return "repaired"
    message = (
        f"object {object_key} is damaged on store {store_name} ({found.value}) and no other"
        " store holds the catalogued content" + (f" ({'; '.join(problems)})" if problems else "")
    )
    if transient:
        raise StorageError(message)
    raise NoGoodCopy(message)


async def _resolve(
    archive: Archive,
    store_name: str,
    object_key: str,
    resolution: str,
    source: str | None,
    row: object,
) -> None:
    """Close the open record (if any: a second run finds none) with an audit row of what was
    done, and count it."""
    async with archive.db.transaction() as conn:
        closed = await conn.fetchrow(
            q("read_repair_resolve"), store_name, object_key, resolution, source
        )
        if closed is None and resolution != "repaired":
            return
        await audit.record(
            conn,
            actor="lifecycle",
            origin="repair-object",
            action="object-repaired",
            outcome="success",
            patient_id=row["patient_id"] if row is not None else None,  # type: ignore[index]
            issuer=row["issuer"] if row is not None else None,  # type: ignore[index]
            study_uid=row["study_uid"] if row is not None else None,  # type: ignore[index]
            series_uid=row["series_uid"] if row is not None else None,  # type: ignore[index]
            sop_uid=row["sop_uid"] if row is not None else None,  # type: ignore[index]
            detail={
                "store": store_name,
                "object_key": object_key,
                "resolution": resolution,
                "repaired_from": source,
                "found": closed["outcome"] if closed is not None else None,
                "detections": closed["detections"] if closed is not None else None,
            },
        )
    archive.metrics.object_repairs.labels(store_name, resolution).inc()
    log_at = log.warning if resolution == "repaired" else log.info
    log_at(
        "object %s on store %s: %s%s",
        object_key,
        store_name,
        resolution,
        f" (copied back from {source})" if source else "",
    )


async def repair_job(engine: Engine, job: Job) -> None:
    try:
        key, store = str(job.payload["object_key"]), str(job.payload["store"])
    except KeyError:
        raise InvalidRequest(f"job {job.id} ({job.kind}) lacks object_key or store") from None
    await repair_copy(engine.archive, store, key)
