"""The change log behind the change feed (``GET /dicom-web/changefeed``): every change to an
instance writes a row here, in the transaction of the change (an outbox), and readers get the
rows in commit order.

Writers call :func:`record_instances`, :func:`record_study` or :func:`record` with their own
connection, inside their transaction.  A new instance needs no call: the filing functions write
its ``create`` row themselves (migration 0170, ``vna_insert_instance``).  Why the rows are
numbered by a sequencer after commit rather than by a sequence at insert is explained in
migration 0170: a reader must never see sequence 10 before 9 has committed.

Actions: ``create`` (a new instance), ``update`` (a new version: replacement, correction,
merge, study move, set-source), ``delete`` (retention deletion), ``reject`` (IOCM rejection,
IHE RAD TF-2 4.66), ``tier`` (the object moved to another storage tier).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from vna.catalog.queries import q

ACTIONS = ("create", "update", "delete", "reject", "tier")
#: Pending changes moved into the feed per sequencer transaction.
SEQUENCE_BATCH = 10_000

_FAR_PAST = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
_FAR_FUTURE = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Change:
    """One entry of the feed."""

    sequence: int
    study_uid: str
    series_uid: str
    sop_uid: str
    action: str
    #: When the entry entered the feed (never decreasing with ``sequence``).
    timestamp: dt.datetime
    #: current, replaced or deleted (the instance's state now, as of this entry).
    state: str
    source: str
    #: The instance's current DICOM JSON metadata; None when not asked for or deleted.
    metadata: dict[str, Any] | None


def _check(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown change action {action!r}")


async def record_instances(
    conn: asyncpg.Connection, action: str, instance_ids: Sequence[int]
) -> None:
    """One change per instance row (they must still exist), in the caller's transaction."""
    _check(action)
    if instance_ids:
        await conn.execute(q("record_instance_changes"), action, list(instance_ids))


async def record_study(conn: asyncpg.Connection, action: str, study: int | str) -> None:
    """One change per instance of the study (its row id or Study Instance UID), in the
    caller's transaction; before the rows go, for a deletion or rejection of the study."""
    _check(action)
    study_id = study
    if isinstance(study, str):
        study_id = await conn.fetchval(q("study_row_id"), study)
        if study_id is None:
            return
    await conn.execute(q("record_study_changes"), action, study_id)


async def record(
    conn: asyncpg.Connection,
    *,
    action: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    source: str = "",
) -> None:
    """One change named by its UIDs, for a caller whose instance row is already gone or who
    has the UIDs at hand (an IOCM rejection: ``record(conn, action="reject", ...)``)."""
    _check(action)
    await conn.execute(q("record_change"), action, study_uid, series_uid, sop_uid, source)


async def sequence(conn: asyncpg.Connection) -> int:
    """Move every committed pending change into the feed; how many moved.  Runs its own
    transactions: call it outside one (its snapshot must be taken after the lock)."""
    total = 0
    while True:
        moved = int(await conn.fetchval(q("sequence_changes"), SEQUENCE_BATCH))
        total += moved
        if moved < SEQUENCE_BATCH:
            return total


async def read(
    conn: asyncpg.Connection,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    offset: int = 0,
    limit: int = 100,
    sources: Sequence[str] | None = None,
    include_metadata: bool = True,
    first_sequence: int = 0,
) -> list[Change]:
    """Entries with ``start <= timestamp < end`` in sequence order, after skipping
    ``offset`` of them; only the given ``sources``' when not None."""
    rows = await conn.fetch(
        q("read_changes"),
        start or _FAR_PAST,
        end or _FAR_FUTURE,
        offset,
        limit,
        None if sources is None else list(sources),
        include_metadata,
        first_sequence,
    )
    return [_change(r) for r in rows]


async def latest(
    conn: asyncpg.Connection,
    *,
    sources: Sequence[str] | None = None,
    include_metadata: bool = True,
) -> Change | None:
    """The last entry (of the given sources), or None when the feed is empty."""
    allowed = None if sources is None else list(sources)
    last = await conn.fetchval(q("latest_change_sequence"), allowed)
    if last is None:
        return None
    found = await read(
        conn, sources=sources, include_metadata=include_metadata, first_sequence=last, limit=1
    )
    return found[0] if found else None


async def prune(conn: asyncpg.Connection, before: dt.datetime) -> int:
    """Drop entries that entered the feed before ``before``; how many."""
    status = await conn.execute(q("prune_changes"), before)
    return int(status.split()[-1])


def _change(r: Any) -> Change:
    return Change(
        sequence=int(r["sequence"]),
        study_uid=r["study_uid"],
        series_uid=r["series_uid"],
        sop_uid=r["sop_uid"],
        action=r["action"],
        timestamp=r["logged_at"],
        state=r["state"],
        source=r["source"],
        metadata=r["metadata"] if r["state"] != "deleted" else None,
    )
