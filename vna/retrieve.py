"""Find stored instances and stream their bytes back (WADO-RS, C-MOVE, C-GET).

Protocol-free like the ingest pipeline: the gateways decide how to frame what this yields.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidRequest, NotFound, StorageError
from vna.storage.base import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredInstance:
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    study_uid: str
    series_uid: str
    object_key: str
    compression: str
    tier: str
    size: int
    sha256: str


class Retriever:
    def __init__(self, db: Database, store: ObjectStore) -> None:
        self.db = db
        self.store = store

    async def find(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[StoredInstance]:
        """The instances of a study, a series or one instance; NotFound when there are none."""
        _check_uid("StudyInstanceUID", study_uid)
        async with self.db.acquire() as conn:
            if sop_uid is not None:
                assert series_uid is not None
                _check_uid("SeriesInstanceUID", series_uid)
                _check_uid("SOPInstanceUID", sop_uid)
                rows = await conn.fetch(q("instance_by_uid"), study_uid, series_uid, sop_uid)
                what = f"instance {sop_uid}"
            elif series_uid is not None:
                _check_uid("SeriesInstanceUID", series_uid)
                rows = await conn.fetch(q("instances_of_series"), study_uid, series_uid)
                what = f"series {series_uid}"
            else:
                rows = await conn.fetch(q("instances_of_study"), study_uid)
                what = f"study {study_uid}"
        if not rows:
            raise NotFound(f"{what} is not in the archive")
        return [_stored(r) for r in rows]

    async def find_by_uids(self, sop_uids: list[str]) -> list[StoredInstance]:
        """The instances among these SOP Instance UIDs that the archive holds."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(q("instances_by_sop_uids"), sop_uids)
        return [_stored(r) for r in rows]

    async def metadata(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[dict[str, Any]]:
        """DICOM JSON of each instance (PS3.18 F.2), bulk data left out."""
        _check_uid("StudyInstanceUID", study_uid)
        async with self.db.acquire() as conn:
            if sop_uid is not None:
                assert series_uid is not None
                _check_uid("SeriesInstanceUID", series_uid)
                _check_uid("SOPInstanceUID", sop_uid)
                rows = await conn.fetch(q("metadata_of_instance"), study_uid, series_uid, sop_uid)
            elif series_uid is not None:
                _check_uid("SeriesInstanceUID", series_uid)
                rows = await conn.fetch(q("metadata_of_series"), study_uid, series_uid)
            else:
                rows = await conn.fetch(q("metadata_of_study"), study_uid)
        if not rows:
            raise NotFound(f"study {study_uid} has no matching instances in the archive")
        return [r["metadata"] for r in rows]

    async def open(self, instance: StoredInstance) -> AsyncIterator[bytes]:
        """Stream the instance's Part 10 bytes exactly as they were stored."""
        if instance.compression != "none":
            raise StorageError(f"unknown object compression {instance.compression!r}")
        return self.store.iter_chunks(instance.object_key)

    async def read(self, instance: StoredInstance) -> bytes:
        chunks = [c async for c in await self.open(instance)]
        return b"".join(chunks)


def _check_uid(name: str, value: str) -> None:
    # UIDs reach SQL only as bound parameters, but a malformed one deserves a 400, not a 404.
    if not is_valid_uid(value):
        raise InvalidRequest(f"{name} is not a valid UID: {value[:80]!r}")


def _stored(r: Any) -> StoredInstance:
    return StoredInstance(
        sop_uid=r["sop_uid"],
        sop_class_uid=r["sop_class_uid"],
        transfer_syntax=r["transfer_syntax"],
        study_uid=r["study_uid"],
        series_uid=r["series_uid"],
        object_key=r["object_key"],
        compression=r["compression"],
        tier=r["tier"],
        size=r["size"],
        sha256=r["sha256"],
    )
