"""Read-only lists for the web console, one page at a time: retention reviews, studies coming
due, dead jobs, past DR drills (and one drill's stored report).  The actions on them are the
engine's own functions (``lifecycle.retention``, ``lifecycle.queue``, ``lifecycle.dr``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from lifecycle import rejections
from lifecycle.dr.drill import DrillRead, DrillResult
from lifecycle.retention import Review
from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.errors import NotFound


async def reviews(db: Database, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """Retention reviews, newest first, with their items counted by state."""
    async with db.acquire() as conn:
        return [dict(r) for r in await conn.fetch(q("listing_reviews"), limit, offset)]


@dataclass(frozen=True)
class ReviewOverview:
    """A review as its report sums it up, without loading every item: the head (``review``,
    whose ``items`` are left empty), the totals and groups of the studies due and held, and
    one page of each list."""

    review: Review
    due: dict[str, int]
    held: dict[str, int]
    by_rule: list[dict[str, Any]]
    by_source: list[dict[str, Any]]
    by_year: list[dict[str, Any]]
    due_items: list[dict[str, Any]]
    held_items: list[dict[str, Any]]


async def review_overview(
    db: Database, review_id: int, limit: int, offset: int = 0
) -> ReviewOverview:
    """What the review page shows: the report's figures (grouped in SQL, as
    ``lifecycle.report.summary`` groups them), ``limit`` studies due from ``offset`` and the
    first ``limit`` held ones."""
    async with db.acquire() as conn:
        head = await conn.fetchrow(q("review_get"), review_id)
        if head is None:
            raise NotFound(f"no retention review {review_id}")
        groups = [dict(r) for r in await conn.fetch(q("listing_review_groups"), review_id)]
        due_items = await conn.fetch(q("listing_review_items"), review_id, False, limit, offset)
        held_items = await conn.fetch(q("listing_review_items"), review_id, True, limit, 0)
        rejected = await rejections.review_items(conn, review_id)
    review = Review(**dict(head), items=[], rejected=rejected)
    empty = {"studies": 0, "instances": 0, "bytes": 0, "stored_bytes": 0}

    def of(kind: str, held: bool) -> list[dict[str, Any]]:
        return [g for g in groups if g["kind"] == kind and g["held"] is held]

    def ranked(kind: str) -> list[dict[str, Any]]:  # largest first, as report.summary
        return sorted(of(kind, False), key=lambda g: (-g["bytes"], g["key"]))

    return ReviewOverview(
        review=review,
        due=next(iter(of("total", False)), empty),
        held=next(iter(of("total", True)), empty),
        by_rule=ranked("rule"),
        by_source=ranked("source"),
        by_year=sorted(of("year", False), key=lambda g: g["key"]),
        due_items=[dict(r) for r in due_items],
        held_items=[dict(r) for r in held_items],
    )


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


async def next_due_dates(db: Database, today: dt.date, limit: int) -> list[dict[str, Any]]:
    """The next dates studies fall due on, with how many and under which rules (as
    ``vna lifecycle status`` lists them)."""
    async with db.acquire() as conn:
        return [dict(r) for r in await conn.fetch(q("status_next_dates"), today, limit)]


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
