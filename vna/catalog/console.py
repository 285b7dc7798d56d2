"""Catalogue reads of the web console that no other path makes (``sql/console.sql``).

Searches go through :mod:`vna.catalog.search` (the QIDO-RS path) and actions through the
engine; only what the console alone shows lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from vna.catalog.queries import q


@dataclass(frozen=True)
class SeriesStorage:
    """How one series of a study is stored: served instances, bytes, tiers, compression, and
    per replica store the instances with a verified copy there."""

    series_uid: str
    instances: int
    size: int
    stored_size: int
    tiers: tuple[str, ...]
    compressions: tuple[str, ...]
    has_pixel_data: bool
    replicated: dict[str, int]


async def study_storage(
    conn: asyncpg.Connection, study_uid: str, replica_stores: Sequence[str]
) -> list[SeriesStorage]:
    rows = await conn.fetch(q("console_study_storage"), study_uid, list(replica_stores))
    return [
        SeriesStorage(
            series_uid=r["series_uid"],
            instances=r["instances"],
            size=r["size"],
            stored_size=r["stored_size"],
            tiers=tuple(sorted(r["tiers"])),
            compressions=tuple(sorted(r["compressions"])),
            has_pixel_data=r["has_pixel_data"],
            replicated=dict(zip(replica_stores, r["replicated"], strict=True)),
        )
        for r in rows
    ]


async def patient_by_pk(conn: asyncpg.Connection, pk: int) -> dict[str, Any] | None:
    """The patient of row ``pk`` (identity, demographics, number of studies); None if none."""
    row = await conn.fetchrow(q("console_patient_by_pk"), pk)
    return dict(row) if row is not None else None


async def instance_history(
    conn: asyncpg.Connection, sop_uids: Sequence[str]
) -> list[dict[str, Any]]:
    """What the change log recorded of these instances, per action (create, update, tier,
    reject, delete): how many, first and last time."""
    rows = await conn.fetch(q("console_instance_history"), list(sop_uids))
    return [dict(r) for r in rows]
