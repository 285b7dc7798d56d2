"""Read-only lists for the web console, one page at a time: retention reviews, studies coming
due, dead jobs, past DR drills (and one drill's stored report).  The actions on them are the
engine's own functions (``lifecycle.retention``, ``lifecycle.queue``, ``lifecycle.dr``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from lifecycle.dr.drill import DrillRead, DrillResult
from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.errors import NotFound


async def reviews(db: Database, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """Retention reviews, newest first, with their items counted by state."""
    async with db.acquire() as conn:
        return [dict(r) for r in await conn.fetch(q("listing_reviews"), limit, offset)]


async def coming_due(
    db: Database,
    since: dt.date | None,
    before: dt.date,
    limit: int,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Studies kept until a date in [``since``, ``before``) (``since`` None: any earlier),
    soonest first; a study falls due the day after its retain-until date."""
    async with db.acquire() as conn:
        rows = await conn.fetch(q("listing_coming_due"), since, before, limit, offset)
    return [dict(r) for r in rows]


async def dead_jobs(db: Database, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    async with db.acquire() as conn:
        return [dict(r) for r in await conn.fetch(q("listing_dead_jobs"), limit, offset)]


async def drills(db: Database, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    async with db.acquire() as conn:
        return [dict(r) for r in await conn.fetch(q("listing_drills"), limit, offset)]


async def load_drill(db: Database, drill_id: int) -> DrillResult:
    """A past drill as it was measured (its report kept in ``dr_drills``)."""
    async with db.acquire() as conn:
        row = await conn.fetchrow(q("drill_report"), drill_id)
    if row is None:
        raise NotFound(f"no DR drill {drill_id}")
    report = row["report"]
    data: dict[str, Any] = json.loads(report) if isinstance(report, str) else dict(report)
    known = {f.name for f in dataclasses.fields(DrillResult)}
    reads = {f.name for f in dataclasses.fields(DrillRead)}
    values = {k: v for k, v in data.items() if k in known}
    for name in ("defects", "not_yet_replicated"):
        values[name] = [
            DrillRead(**{k: v for k, v in d.items() if k in reads}) for d in values.get(name) or []
        ]
    values["id"] = int(row["id"])
    return DrillResult(**values)
