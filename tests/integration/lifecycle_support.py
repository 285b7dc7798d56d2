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
from vna.errors import OfflineError
from vna.ingest.pipeline import Sender
from vna.storage.base import ObjectInfo
from vna.storage.filesystem import FilesystemStore


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


class OfflineColdStore(FilesystemStore):
    """A filesystem store whose cold root is offline, like an S3 GLACIER class: an object there
    cannot be read until ``restore`` (which completes at once, as moto's do) has made a
    readable copy."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.restored: set[str] = set()

    @property
    def offline_tiers(self) -> frozenset[str]:
        return frozenset({"cold"})

    def restore_seconds(self, tier: str) -> int:
        return 5 * 3600

    async def stat(self, key: str) -> ObjectInfo | None:
        info = await super().stat(key)
        if info is None:
            return None
        return dataclasses.replace(info, available=info.tier != "cold" or key in self.restored)

    async def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        info = await self.stat(key)
        if info is not None and not info.available:
            raise OfflineError(f"{key} is offline", retry_after_seconds=5 * 3600)
        async for chunk in super().iter_chunks(key, chunk_size):
            yield chunk

    async def read_range(self, key: str, start: int, length: int) -> bytes:
        info = await self.stat(key)
        if info is not None and not info.available:
            raise OfflineError(f"{key} is offline", retry_after_seconds=5 * 3600)
        return await super().read_range(key, start, length)

    async def restore(self, key: str, days: int) -> ObjectInfo:
        self.restored.add(key)
        info = await self.stat(key)
        assert info is not None
        return info


def use_store(archive: Archive, store: FilesystemStore) -> None:
    """Make ``store`` the archive's object store everywhere it is used."""
    archive.store = archive.retriever.store = archive.ingester.store = store


async def move_to_tier(archive: Archive, study_uid: str, tier: str) -> None:
    """Move a study's objects to ``tier`` in the store and the catalogue, as a tiering job
    does (lifecycle.tiering.move_study), without tiering rules."""
    import lifecycle  # noqa: F401 - registers the lifecycle SQL blocks (tier_record)
    from vna.catalog.queries import q

    for row in await instances_of(archive, study_uid):
        await archive.store.set_tier(row["object_key"], tier)
        async with archive.db.acquire() as conn:
            await conn.execute(q("tier_record"), row["id"], tier, row["object_key"])
