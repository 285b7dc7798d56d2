"""The HL7 message log and its duplicate check (migration 0140, ``sql/hl7.sql``); the caller
owns the connection."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from vna.catalog.queries import q

#: A message still "processing" after this long was cut off (a server stopped): a
#: retransmission of it is processed again.
STALE_AFTER = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Earlier:
    """How a control ID seen before was answered."""

    id: int
    state: str
    ack_code: str | None
    outcome: str | None
    detail: str
    change_ids: tuple[int, ...]


async def claim(
    conn: asyncpg.Connection,
    *,
    facility: str,
    control_id: str,
    peer: str,
    message_type: str,
    message: str,
) -> int | None:
    """The row id to process this message under, or None when the control ID was already
    acknowledged AA (or is being processed right now)."""
    row_id = await conn.fetchval(
        q("hl7_claim_message"), facility, control_id, peer, message_type, message, STALE_AFTER
    )
    return None if row_id is None else int(row_id)


async def count_receipt(conn: asyncpg.Connection, facility: str, control_id: str) -> Earlier:
    row = await conn.fetchrow(q("hl7_count_receipt"), facility, control_id)
    return Earlier(
        id=row["id"],
        state=row["state"],
        ack_code=row["ack_code"],
        outcome=row["outcome"],
        detail=row["detail"],
        change_ids=tuple(row["change_ids"]),
    )


async def insert_unkeyed(
    conn: asyncpg.Connection, *, peer: str, message_type: str, message: str
) -> int:
    return int(await conn.fetchval(q("hl7_insert_unkeyed"), peer, message_type, message))


async def finish(
    conn: asyncpg.Connection,
    row_id: int,
    *,
    ack_code: str,
    outcome: str,
    detail: str,
    change_ids: Sequence[int],
    source: str | None,
    patient: str | None,
) -> None:
    await conn.execute(
        q("hl7_finish_message"),
        row_id,
        ack_code,
        outcome,
        detail,
        list(change_ids),
        source,
        patient,
    )


async def list_messages(
    conn: asyncpg.Connection, *, limit: int, outcome: str | None = None
) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q("hl7_list_messages"), limit, outcome)]


async def show_message(conn: asyncpg.Connection, message_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(q("hl7_show_message"), message_id)
    return None if row is None else dict(row)
