"""Which referenced instances the archive takes responsibility for (PS3.4 J.3.3: by reporting
an instance committed, the SCP commits to keeping it; the PACS may then delete its copy).

Committed means, for each reference:

1. catalogued, under the SOP class the request names (otherwise 0x0119 class/instance
   conflict; an instance not held: 0x0112, or 0x0122 when the class is no storage SOP class);
2. its object read back now from the active store through the one reader
   (``Retriever.verify``: decompressed as it streams, SHA-256 and size compared with the
   catalogue) -- otherwise 0x0110 processing failure;
3. with ``[dimse] commit_requires_replicas = N``: a verified copy of its current object on N
   replica stores, as recorded by replication (table ``replicas``).  Replication runs in the
   lifecycle workers; the check waits for it, polling, up to the time it is given, and what
   is still short is reported failed (0x0110), so that the PACS keeps its copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pynetdicom.presentation import AllStoragePresentationContexts

from vna.catalog import commitments
from vna.commitment.model import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    Failure,
    Outcome,
    Reference,
)
from vna.errors import NotFound, OfflineError, VnaError
from vna.retrieve import stored_instance

if TYPE_CHECKING:
    from vna.archive import Archive

log = logging.getLogger(__name__)
#: Objects read back at once (each a stream from the store).
VERIFY_CONCURRENCY = 8
#: Seconds between looks at the replicas while waiting for replication.
POLL_SECONDS = 1.0
_STORAGE_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)


@dataclass
class Verdict:
    outcome: Outcome
    #: References that failed only for want of replica copies (replication may still come).
    short_of_replicas: list[Reference] = field(default_factory=list)
    #: Studies of the committed instances (the report's audit row names them).
    study_uids: list[str] = field(default_factory=list)


def replica_stores(archive: Archive) -> list[str]:
    """The replicas whose copies count: every configured one except the active store (after a
    failover a replica serves, and its copy is the one verified in step 2)."""
    active = archive.sites.active if archive.sites is not None else "primary"
    return [r.name for r in archive.settings.replicas if r.name != active]


async def check(
    archive: Archive,
    references: tuple[Reference, ...] | list[Reference],
    *,
    required_replicas: int,
    wait_seconds: float,
    give_up: Callable[[], bool] | None = None,
) -> Verdict:
    """The verdict on every reference; waits up to ``wait_seconds`` for replication (less
    when ``give_up`` says so)."""
    stores = replica_stores(archive)
    uids = list(dict.fromkeys(r.sop_instance_uid for r in references))
    async with archive.db.acquire() as conn:
        rows = {r["sop_uid"]: r for r in await commitments.catalogued(conn, uids, stores)}
    problems = await _verify_objects(archive, [rows[u] for u in uids if u in rows], references)
    replicas = {u: int(r["replicas"]) for u, r in rows.items()}

    # Only instances that can be committed are worth waiting for (not a class conflict, not
    # a damaged object).
    candidates = {
        r.sop_instance_uid
        for r in references
        if r.sop_instance_uid in rows
        and rows[r.sop_instance_uid]["sop_class_uid"] == r.sop_class_uid
        and r.sop_instance_uid not in problems
    }
    deadline = time.monotonic() + max(wait_seconds, 0.0)
    while True:
        short = [u for u in candidates if replicas.get(u, 0) < required_replicas]
        if not short or time.monotonic() >= deadline or (give_up is not None and give_up()):
            break
        await asyncio.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))
        async with archive.db.acquire() as conn:
            replicas.update(await commitments.replica_counts(conn, short, stores))

    verdict = Verdict(Outcome())
    for ref in references:
        row = rows.get(ref.sop_instance_uid)
        uid = ref.sop_instance_uid
        if row is None:
            # PS3.3 C.14.1.1: a class the archive cannot store at all is 0122, an instance it
            # does not hold 0112.
            reason = (
                NO_SUCH_OBJECT
                if ref.sop_class_uid in _STORAGE_CLASSES
                else (SOP_CLASS_NOT_SUPPORTED)
            )
            verdict.outcome.failed.append(Failure(ref, reason, "not in the archive"))
        elif row["sop_class_uid"] != ref.sop_class_uid:
            verdict.outcome.failed.append(
                Failure(ref, CLASS_INSTANCE_CONFLICT, f"stored as {row['sop_class_uid']}")
            )
        elif uid in problems:
            verdict.outcome.failed.append(Failure(ref, PROCESSING_FAILURE, problems[uid]))
        elif replicas.get(uid, 0) < required_replicas:
            verdict.outcome.failed.append(
                Failure(
                    ref,
                    PROCESSING_FAILURE,
                    f"verified on {replicas.get(uid, 0)} of {required_replicas} replicas",
                )
            )
            verdict.short_of_replicas.append(ref)
        else:
            verdict.outcome.committed.append(ref)
            if row["study_uid"] not in verdict.study_uids:
                verdict.study_uids.append(row["study_uid"])
    return verdict


async def _verify_objects(
    archive: Archive, rows: list[object], references: tuple[Reference, ...] | list[Reference]
) -> dict[str, str]:
    """Read back the object of every catalogued instance whose class the request agrees on;
    what went wrong with each that failed, by SOP Instance UID."""
    asked = {(r.sop_instance_uid, r.sop_class_uid) for r in references}
    slots = asyncio.Semaphore(VERIFY_CONCURRENCY)
    problems: dict[str, str] = {}

    async def verify(row: object) -> None:
        instance = stored_instance(row)
        if (instance.sop_uid, instance.sop_class_uid) not in asked:
            return  # a class/instance conflict: nothing to read
        async with slots:
            try:
                await archive.retriever.verify(instance)
            except NotFound:
                problems[instance.sop_uid] = "object missing from the store"
            except OfflineError:
                problems[instance.sop_uid] = "object in an offline tier, not verifiable now"
            except VnaError as exc:
                problems[instance.sop_uid] = str(exc)[:200]
        if instance.sop_uid in problems:
            log.warning(
                "storage commitment: instance %s not committed: %s",
                instance.sop_uid,
                problems[instance.sop_uid],
            )

    await asyncio.gather(*(verify(r) for r in rows))
    return problems
