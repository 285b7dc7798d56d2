"""Shared steps of the lifecycle integration tests: archives with lifecycle settings, ingest,
catalogue look-ups."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from tests.factory import part10
from vna.archive import Archive
from vna.config import DEFAULT_SOURCE, Settings, SourceSettings
from vna.ingest.pipeline import Sender


def with_lifecycle(settings: Settings, **sections: Any) -> Settings:
    """``settings`` with lifecycle sections replaced: lifecycle={...}, compression={...},
    retention_rules=(...), tiering_rules=(...), storage_url=..."""
    changes: dict[str, Any] = {}
    for name, value in sections.items():
        current = getattr(settings, name)
        if isinstance(value, dict):
            changes[name] = dataclasses.replace(current, **value)
        else:
            changes[name] = value
    return dataclasses.replace(settings, **changes)


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Archive]:
    archive = await Archive.open(settings)
    try:
        yield archive
    finally:
        await archive.close()


async def ingest(
    archive: Archive, datasets: Sequence[Dataset], source: SourceSettings = DEFAULT_SOURCE
) -> dict[str, bytes]:
    """Store the datasets through the ingest pipeline; their Part 10 bytes by SOP UID."""
    sent = {}
    sender = Sender(source=source, protocol="import", actor="test")
    for ds in datasets:
        data = part10(ds)
        path = archive.incoming / f"{uuid.uuid4().hex}.dcm"
        Path(path).write_bytes(data)  # noqa: ASYNC240 - a test
        await archive.ingester.ingest_file(path, sender)
        sent[str(ds.SOPInstanceUID)] = data
    return sent


async def fetch(archive: Archive, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with archive.db.acquire() as conn:
        return [dict(r) for r in await conn.fetch(sql, *args)]


async def instances_of(archive: Archive, study_uid: str) -> list[dict[str, Any]]:
    return await fetch(
        archive,
        "SELECT i.* FROM instances i JOIN series se ON se.id = i.series_fk"
        " JOIN studies st ON st.id = se.study_fk WHERE st.study_uid = $1 ORDER BY i.id",
        study_uid,
    )


async def jobs(archive: Archive, kind: str | None = None) -> list[dict[str, Any]]:
    return await fetch(
        archive,
        "SELECT * FROM jobs WHERE $1::text IS NULL OR kind = $1 ORDER BY id",
        kind,
    )
