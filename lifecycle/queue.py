"""The job queue in PostgreSQL: enqueue, claim (FOR UPDATE SKIP LOCKED), lease, finish.

A job is claimed by one worker at a time: the claim locks ready rows with SKIP LOCKED, so
concurrent claimers on any number of machines take disjoint rows without waiting for each
other, and marks them running under the worker's name with a lease (``locked_at``).  A live
worker renews its lease; a job whose lease expired (its worker was killed) goes back to the
queue.  Every state change names the worker, so a worker that lost its lease cannot overwrite
the outcome of the worker that took the job over.

Jobs must be idempotent: a worker killed after doing the work but before recording it causes
the job to run again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from vna.catalog.queries import q


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    #: Attempts so far, this one included.
    attempts: int
    max_attempts: int


async def enqueue(
    conn: asyncpg.Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    dedup_key: str | None = None,
    delay_seconds: float = 0,
) -> int | None:
    """Queue a job in the caller's transaction; None when a job with the same dedup key is
    already queued or running."""
    job_id: int | None = await conn.fetchval(
        q("job_enqueue"), kind, payload, dedup_key, float(delay_seconds)
    )
    return job_id


async def claim(conn: asyncpg.Connection, worker: str, limit: int = 1) -> list[Job]:
    rows = await conn.fetch(q("job_claim"), worker, limit)
    return [
        Job(
            id=r["id"],
            kind=r["kind"],
            payload=_payload(r["payload"]),
            attempts=r["attempts"],
            max_attempts=r["max_attempts"],
        )
        for r in rows
    ]


async def complete(conn: asyncpg.Connection, job_id: int, worker: str) -> bool:
    """False when the lease was lost (another worker took the job over)."""
    return _changed(await conn.execute(q("job_complete"), job_id, worker))


async def retry(
    conn: asyncpg.Connection, job_id: int, worker: str, delay_seconds: float, error: str
) -> bool:
    return _changed(await conn.execute(q("job_retry"), job_id, worker, float(delay_seconds), error))


async def reschedule(
    conn: asyncpg.Connection, job_id: int, worker: str, delay_seconds: float, note: str
) -> bool:
    return _changed(
        await conn.execute(q("job_reschedule"), job_id, worker, float(delay_seconds), note)
    )


async def bury(conn: asyncpg.Connection, job_id: int, worker: str, error: str) -> bool:
    """Dead-letter the job: it stays, with its last error, for the administrator."""
    return _changed(await conn.execute(q("job_dead"), job_id, worker, error))


async def heartbeat(conn: asyncpg.Connection, job_ids: list[int], worker: str) -> None:
    if job_ids:
        await conn.execute(q("job_heartbeat"), job_ids, worker)


async def reap_expired(conn: asyncpg.Connection, lease_seconds: float) -> list[tuple[int, str]]:
    """Jobs whose lease expired, put back (or dead-lettered); (id, new state) of each."""
    rows = await conn.fetch(q("job_reap_expired"), float(lease_seconds))
    return [(r["id"], r["state"]) for r in rows]


async def requeue_dead(
    conn: asyncpg.Connection, job_ids: list[int], all_dead: bool = False
) -> list[int]:
    rows = await conn.fetch(q("job_requeue"), job_ids, all_dead)
    return [r["id"] for r in rows]


async def mark_done(conn: asyncpg.Connection, job_ids: list[int]) -> None:
    """Jobs their enqueuer carried out itself (the object deletions of an approval): done,
    unless a worker has taken them meanwhile."""
    if job_ids:
        await conn.execute(q("job_mark_done"), job_ids)


async def settle(conn: asyncpg.Connection, job_ids: list[int]) -> None:
    """Queued or dead-lettered jobs whose work was done outside the queue: done, error
    cleared."""
    if job_ids:
        await conn.execute(q("job_settle"), job_ids)


def _payload(value: Any) -> dict[str, Any]:
    # The pool decodes jsonb; a bare connection (a test, a script) hands back text.
    if isinstance(value, str):
        decoded: dict[str, Any] = json.loads(value)
        return decoded
    return dict(value)


def _changed(status: str) -> bool:
    return status.split()[-1] != "0"
