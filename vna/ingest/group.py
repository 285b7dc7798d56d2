"""Group filing: the new instances of one STOW-RS request filed in one catalogue statement.

A STOW-RS request is answered once every instance in it is stored and filed, so an instance
whose object is already durable loses nothing by waiting for the request's others.  Filed one
by one, each cost a statement and a commit: PostgreSQL's work per statement, the round trip
and the driver's work per query, which on two cores shared with the gateway were a good part
of the ingest's CPU.  Here the request's new instances are filed together
(``filing.file_new_instances``, one statement and one commit) once every instance of the
request still in flight is waiting, or sooner when ``max_size`` wait.  Each instance still
gets its own catalogue row, outbox job and audit record; one that is not the plain new case
comes back None, and its caller takes the general path as it would have alone.

An instance waits here without its ingest slot (``Ingester``), so a request of many parts
never waits for itself.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from vna.catalog.database import Database
from vna.errors import CatalogError
from vna.ingest import filing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Waiting:
    filing: filing.NewFiling
    future: asyncio.Future[int | None]


class FilingGroup:
    """The filings of one request.  Every instance of the request calls ``join`` when it
    starts and ``leave`` when it is done, filed or not; the request calls ``close`` when no
    more instances will join, whatever happened (otherwise those waiting would wait on)."""

    def __init__(self, db: Database, max_size: int = 32) -> None:
        self._db = db
        #: Not more instances than this in one statement.  Each is a subtransaction
        #: (PL/pgSQL exception block), and a backend tracks at most 64 of them cheaply.
        self.max_size = max_size
        self._active = 0
        self._closed = False
        self._waiting: list[_Waiting] = []
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Instances waiting to be filed."""
        return len(self._waiting)

    def join(self) -> None:
        self._active += 1

    def leave(self) -> None:
        self._active -= 1
        self._flush_when_ready()

    def close(self) -> None:
        self._closed = True
        self._flush_when_ready()

    async def file(self, new: filing.NewFiling) -> int | None:
        """The row id of the new instance, or None when it is not the plain new case."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(new, future))
        self._flush_when_ready()
        return await future

    def _flush_when_ready(self) -> None:
        waiting = len(self._waiting)
        if not waiting:
            return
        if waiting >= self.max_size or (self._closed and waiting >= self._active):
            batch, self._waiting = self._waiting, []
            task = asyncio.create_task(self._flush(batch), name="vna-filing-group")
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[_Waiting]) -> None:
        # One order for every group: two requests filing new rows of the same patients,
        # studies and series then take their locks in the same order and cannot deadlock.
        batch.sort(key=lambda w: _order(w.filing.version))
        try:
            try:
                async with self._db.acquire() as conn:
                    ids = await filing.file_new_instances(conn, [w.filing for w in batch])
            except Exception as exc:
                # Nothing of the group was written: file each alone, so that each gets its
                # own outcome (one odd instance must not fail the others).
                log.warning(
                    "filing %d instances together failed (%s); filing them one by one",
                    len(batch),
                    exc,
                )
                for w in batch:
                    await self._file_alone(w)
                return
            for w, new_id in zip(batch, ids, strict=True):
                if not w.future.done():
                    w.future.set_result(new_id)
        finally:
            for w in batch:  # cancelled mid-way (shutdown): nobody may wait for ever
                if not w.future.done():
                    w.future.set_exception(CatalogError("filing interrupted"))

    async def _file_alone(self, w: _Waiting) -> None:
        f = w.filing
        try:
            async with self._db.acquire() as conn:
                new_id = await filing.file_new_instance(
                    conn, f.version, actor=f.actor, origin=f.origin, detail=f.detail
                )
        except Exception as exc:
            if not w.future.done():
                w.future.set_exception(exc)
            return
        if not w.future.done():
            w.future.set_result(new_id)


def _order(v: filing.Version) -> tuple[str, ...]:
    h = v.header
    return (h.patient_id, v.issuer, h.study_uid, h.series_uid, h.sop_instance_uid)
