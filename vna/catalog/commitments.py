"""Storage Commitment requests and reports in the catalogue (table ``commitments``, migration
0150).  Repository functions over the named blocks of ``sql/commitment.sql``; the caller owns
the connection and the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from vna.catalog.queries import q

#: The job kind that sends a report on a new association (lifecycle/handlers.py).
REPORT_JOB = "commitment-report"
STATES = ("pending", "reported", "undeliverable")


async def record_request(
    conn: asyncpg.Connection,
    *,
    transaction_uid: str,
    source: str,
    calling_ae: str,
    origin: str,
    required_replicas: int,
    refs: Sequence[tuple[str, str]],
    job_delay_seconds: float,
) -> int:
    """Record an N-ACTION request with its report job; the commitment's id."""
    payload = [{"class": c, "instance": i} for c, i in refs]
    commitment_id: int = await conn.fetchval(
        q("commitment_record"),
        transaction_uid,
        source,
        calling_ae,
        origin,
        required_replicas,
        payload,
        len(payload),
        float(job_delay_seconds),
    )
    return commitment_id


async def get(conn: asyncpg.Connection, commitment_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(q("commitment_get"), commitment_id)
    return row


async def report_now(conn: asyncpg.Connection, commitment_id: int) -> None:
    await conn.execute(q("commitment_report_now"), commitment_id)


async def mark_reported(
    conn: asyncpg.Connection,
    commitment_id: int,
    *,
    committed: int,
    failed: list[dict[str, Any]],
    via: str,
) -> bool:
    """Record the report as sent; False when it had been recorded already."""
    row = await conn.fetchval(
        q("commitment_reported"), commitment_id, committed, len(failed), {"failed": failed}, via
    )
    return row is not None


async def attempt_failed(conn: asyncpg.Connection, commitment_id: int, error: str) -> None:
    await conn.execute(q("commitment_attempt_failed"), commitment_id, error[:2000])


async def mark_undeliverable(
    conn: asyncpg.Connection,
    commitment_id: int,
    *,
    committed: int | None,
    failed: list[dict[str, Any]] | None,
    error: str,
) -> None:
    """The report cannot be delivered; what it would have said, when known."""
    await conn.execute(
        q("commitment_undeliverable"),
        commitment_id,
        committed,
        None if failed is None else len(failed),
        None if failed is None else {"failed": failed},
        error[:2000],
    )


async def list_commitments(
    conn: asyncpg.Connection, *, state: str | None, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("commitment_list"), state, limit))


async def counts(conn: asyncpg.Connection) -> tuple[int, int]:
    """(pending, failed) for /metrics."""
    row = await conn.fetchrow(q("commitment_counts"))
    return int(row["pending"]), int(row["failed"])


async def catalogued(
    conn: asyncpg.Connection, sop_uids: Sequence[str], replica_stores: Sequence[str]
) -> list[asyncpg.Record]:
    """The catalogued instances among ``sop_uids`` with their verified replica copies."""
    return list(await conn.fetch(q("commitment_instances"), list(sop_uids), list(replica_stores)))


async def replica_counts(
    conn: asyncpg.Connection, sop_uids: Sequence[str], replica_stores: Sequence[str]
) -> dict[str, int]:
    rows = await conn.fetch(q("commitment_replica_counts"), list(sop_uids), list(replica_stores))
    return {r["sop_uid"]: int(r["replicas"]) for r in rows}
