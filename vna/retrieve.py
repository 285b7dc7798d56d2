"""Find stored instances and stream their bytes back (WADO-RS, C-MOVE, C-GET).

Protocol-free like the ingest pipeline: the gateways decide how to frame what this yields.

What the lifecycle engine did to an object is undone here, invisibly to the protocols: a
zstandard-compressed object is decompressed as it streams (the bytes out are the bytes
received, checked against the frame checksum and the catalogued size), and an object in an
offline tier (S3 GLACIER / DEEP_ARCHIVE) raises OfflineError, which the gateways answer with a
retry-later status, after queueing a restore job.  Retrieves also record the access time that
tiering rules read, batched in memory and written every ``access_flush_seconds``.

Every read is checked against the catalogued SHA-256 and size as it streams (the last chunk
held back until the check passed), the first ``_READ_AHEAD`` bytes before ``open`` returns.
When the active store cannot serve an object (missing, failing, or holding other bytes), the
replicas are tried in turn (disaster recovery, ``vna.recovery``), checked the same way: reads
heal themselves.  The damaged copy is recorded (table ``read_repairs``, read by every node so
that later reads go to a replica first), audited, counted, and repaired by a queued
``repair-object`` job (``lifecycle.dr.read_repair``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import zstandard

from vna.catalog import audit
from vna.catalog.database import Database
from vna.catalog.patient_links import PatientScope, ScopedIdentities, scope_identities
from vna.catalog.queries import q
from vna.dicom.frames import ObjectLayout, PixelLayout, cut_frame, object_layout, parsed_pixels
from vna.dicom.uids import is_valid_uid
from vna.errors import (
    DamagedObject,
    InvalidRequest,
    NotFound,
    OfflineError,
    StorageError,
    VnaError,
)
from vna.metrics import Metrics
from vna.storage import pixelpack, seekable
from vna.storage.base import ObjectStore

log = logging.getLogger(__name__)
#: Decompress in a worker thread above this many input bytes (a few ms of CPU).
_THREAD_THRESHOLD = 256 * 1024
#: Decompress a range in a worker thread above this many compressed bytes.
_RANGE_THREAD_THRESHOLD = 1 << 20
#: Flush access times early once this many instances are waiting.
_MAX_PENDING_TOUCHES = 50_000
#: Offline checks of one retrieve done at once (HeadObject requests).
_STAT_CONCURRENCY = 16
#: Layouts and seek tables kept in memory (both are functions of immutable content).
_CACHED_LAYOUTS = 4096
_CACHED_SEEK_TABLES = 4096
#: The forms of stored objects (instances.compression): as received, zstandard, pixel packs.
_FORMS = frozenset({"none", "zstd"}) | pixelpack.IMAGE_CODECS
#: Bytes of an object read and checked before ``Retriever.open`` returns (a whole typical
#: instance; the batch C-MOVE and C-GET read ahead too): damage found in them is healed from a
#: replica, or answered with a clear error, before the first byte goes out.
_READ_AHEAD = 4 << 20
#: How often the copies known damaged (table read_repairs, written by any node) are read.
_DAMAGE_REFRESH_SECONDS = 5.0
_T = TypeVar("_T")
#: An object read whole to find its layout, up to this size, serves the reads of the same
#: request that follow (a single-frame image's frame is nearly all of it) from memory.
_RECENT_OBJECT_MAX = 4 * 1024**2
#: That object for the request (task) at hand: (SHA-256, bytes).  Per request, not a cache
#: shared between requests: the next request reads the store, and so is refused with 503 if
#: the object has gone offline meanwhile.
_READ_WHOLE: ContextVar[tuple[str, bytes] | None] = ContextVar("vna_read_whole", default=None)
#: Layouts found by retrieves are written in batches, this long after the first of a batch.
_LAYOUT_FLUSH_SECONDS = 1.0


class _Lru(dict[Any, Any]):
    """A small bounded cache: the oldest entry goes when full."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: Any, value: Any) -> None:
        self.pop(key, None)
        if len(self) >= self.capacity:
            del self[next(iter(self))]
        self[key] = value


@dataclass(frozen=True)
class RetrieveKeys:
    """What a C-MOVE or C-GET asks for: unique keys down to its level (PS3.4 C.4.2.2.1)."""

    level: str
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    study_uids: tuple[str, ...] | None = None
    series_uids: tuple[str, ...] | None = None
    sop_uids: tuple[str, ...] | None = None


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


@dataclass(frozen=True)
class MetadataEntry:
    metadata: dict[str, Any]
    study_uid: str
    series_uid: str
    sop_uid: str
    has_pixel_data: bool
    layout: ObjectLayout | None


class Retriever:
    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        *,
        restore_days: int = 3,
        access_flush_seconds: float = 60,
        fallbacks: Sequence[ObjectStore] = (),
        metrics: Metrics | None = None,
        read_only: bool = False,
        repair: bool = False,
    ) -> None:
        self.db = db
        self.store = store
        #: Stores tried in turn when ``store`` cannot serve an object (disaster recovery:
        #: the replicas), each read checked against the catalogued digest.
        self.fallbacks = tuple(fallbacks)
        self.metrics = metrics
        #: A reader that writes nothing to the catalogue, neither access times nor restore
        #: requests (a DR drill reading a replica).
        self.read_only = read_only
        #: Queue a ``repair-object`` job for a damaged copy of the active store (replicas are
        #: declared: one may hold a good copy).
        self.repair = repair and not read_only
        #: Object keys whose copy on the active store is known damaged (table read_repairs).
        self._damaged: set[str] = set()
        self._damaged_read_at = -_DAMAGE_REFRESH_SECONDS
        self.restore_days = restore_days
        self.access_flush_seconds = access_flush_seconds
        self._touched: set[str] = set()
        self._layouts = _Lru(_CACHED_LAYOUTS)
        self._seek_tables = _Lru(_CACHED_SEEK_TABLES)
        #: Objects the catalogue had no layout for a moment ago (the instance query said).
        self._unrecorded_seen = _Lru(_CACHED_LAYOUTS)
        #: Layouts found by retrieves, not yet written (SHA-256 -> layout).
        self._unrecorded: dict[str, ObjectLayout] = {}
        self._layout_writer: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._flush_now = asyncio.Event()

    async def find(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        scope: PatientScope | None = None,
    ) -> list[StoredInstance]:
        """The instances of a study, a series or one instance; NotFound when there are none
        (or none of a patient in ``scope``: a source learns nothing of others' studies)."""
        rows = await self._rows(
            ("instances_of_study", "instances_of_series", "instance_by_uid"),
            study_uid,
            series_uid,
            sop_uid,
            scope,
        )
        if sop_uid is not None:
            # One instance comes with its recorded layout: its frames, bulk values or
            # rendering then need no second catalogue round trip (nor one to learn that
            # none is recorded).
            for r in rows:
                if r["sha256"] in self._layouts:
                    continue
                layout = ObjectLayout.from_json(r["layout"]) if r["layout"] is not None else None
                if layout is not None:
                    self._layouts.put(r["sha256"], layout)
                elif r["layout"] is None:
                    self._unrecorded_seen.put(r["sha256"], True)
        return [stored_instance(r) for r in rows]

    async def find_by_uids(self, sop_uids: list[str]) -> list[StoredInstance]:
        """The instances among these SOP Instance UIDs that the archive holds."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(q("instances_by_sop_uids"), sop_uids)
        return [stored_instance(r) for r in rows]

    async def find_by_keys(
        self, keys: RetrieveKeys, *, limit: int, scope: PatientScope | None = None
    ) -> list[StoredInstance]:
        """The stored instances the keys of a C-MOVE or C-GET name, in study, series and
        instance order, at most ``limit`` of them; only patients in ``scope``."""
        async with self.db.acquire() as conn:
            scoped = await scope_identities(conn, scope) if scope is not None else None
            within = _scope_args(scoped)
            if keys.sop_uids is not None:
                rows = await conn.fetch(
                    q("retrieve_keys_instances"), list(keys.sop_uids), limit, *within
                )
            elif keys.series_uids is not None:
                rows = await conn.fetch(
                    q("retrieve_keys_series"), list(keys.series_uids), limit, *within
                )
            elif keys.study_uids is not None:
                rows = await conn.fetch(
                    q("retrieve_keys_studies"), list(keys.study_uids), limit, *within
                )
            elif scoped is not None and scoped.replaces_patient_keys:
                # The source's patient and the identities linked to it, under their own IDs.
                ids = [i for i, _ in scoped.identities]
                issuers = [issuer for _, issuer in scoped.identities]
                rows = await conn.fetch(q("retrieve_keys_identities"), ids, issuers, limit)
            else:
                rows = await conn.fetch(
                    q("retrieve_keys_patient"),
                    keys.patient_id,
                    keys.issuer_of_patient_id,
                    limit,
                    *within,
                )
        patient_keys = scoped is None or not scoped.replaces_patient_keys
        found = []
        for row in rows:
            # Keys above the level must agree with what the catalogue holds (PS3.4 C.4.2.2.1).
            if keys.study_uids is not None and row["study_uid"] not in keys.study_uids:
                continue
            if keys.series_uids is not None and row["series_uid"] not in keys.series_uids:
                continue
            if patient_keys and keys.patient_id is not None:
                if row["patient_id"] != keys.patient_id:
                    continue
                issuer = keys.issuer_of_patient_id
                if issuer is not None and row["issuer"] != issuer:
                    continue
            found.append(stored_instance(row))
        return found

    async def source_of_study(self, study_uid: str) -> str | None:
        """The source a study came from (what reader tokens are restricted by); None when the
        archive does not hold it."""
        _check_uid("StudyInstanceUID", study_uid)
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(q("study_subject"), study_uid)
        return None if row is None else str(row["source"])

    async def metadata(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        scope: PatientScope | None = None,
    ) -> list[dict[str, Any]]:
        """DICOM JSON of each instance (PS3.18 F.2), bulk data left out."""
        rows = await self._rows(
            ("metadata_of_study", "metadata_of_series", "metadata_of_instance"),
            study_uid,
            series_uid,
            sop_uid,
            scope,
        )
        return [r["metadata"] for r in rows]

    async def _rows(
        self,
        queries: tuple[str, str, str],
        study_uid: str,
        series_uid: str | None,
        sop_uid: str | None,
        scope: PatientScope | None,
    ) -> list[Any]:
        """The rows of the study-, series- or instance-level query; NotFound when none."""
        _check_uid("StudyInstanceUID", study_uid)
        args: tuple[str, ...] = (study_uid,)
        what = f"study {study_uid}"
        if series_uid is not None:
            _check_uid("SeriesInstanceUID", series_uid)
            args, what = (*args, series_uid), f"series {series_uid}"
            if sop_uid is not None:
                _check_uid("SOPInstanceUID", sop_uid)
                args, what = (*args, sop_uid), f"instance {sop_uid}"
        async with self.db.acquire() as conn:
            scoped = await scope_identities(conn, scope) if scope is not None else None
            rows = await conn.fetch(q(queries[len(args) - 1]), *args, *_scope_args(scoped))
        if not rows:
            raise NotFound(f"{what} is not in the archive")
        return list(rows)

    async def open(self, instance: StoredInstance) -> AsyncIterator[bytes]:
        """Stream the instance's Part 10 bytes exactly as they were received.

        The object is opened, and its first ``_READ_AHEAD`` bytes read and checked, before this
        returns: NotFound, OfflineError (a restore has been queued) and damage found in them
        are raised (or healed from a replica) before a gateway has sent anything.  Every byte
        is checked against the catalogued SHA-256 and size as it streams, and the last chunk
        is held back until it is: a damaged copy is never delivered whole.
        """
        if instance.compression not in _FORMS:
            raise StorageError(f"unknown object compression {instance.compression!r}")
        try:
            stream, store = await self._from_any(instance, lambda store: _prepared(store, instance))
        except OfflineError as exc:
            raise await self._offline([instance]) from exc
        if not self.read_only:
            self._touch(instance.sop_uid)
        if store is self.store:
            stream = self._watched(stream, instance)
        if self.metrics is not None:
            stream = _counted(stream, self.metrics)
        return stream

    async def _from_any(
        self, instance: StoredInstance, read: Callable[[ObjectStore], Awaitable[_T]]
    ) -> tuple[_T, ObjectStore]:
        """``read`` done on the active store, else on the first fallback store that can (and
        the active store's failure recorded: a damaged copy is audited, counted and its repair
        queued).  A copy already known damaged (by this process or another node: table
        ``read_repairs``) is not read: the fallbacks are tried first, the active store last.

        Raises what the active store failed with, a missing object as DamagedObject (the
        catalogue says the archive holds it: it is not a 404) when no other store has it.
        """
        await self._refresh_damaged()
        key = instance.object_key
        known = key in self._damaged and bool(self.fallbacks)
        failure: VnaError | None = None
        if not known:
            try:
                return await read(self.store), self.store
            except (NotFound, StorageError) as exc:
                failure = _as_damage(exc, instance, self.store)
        for store in self.fallbacks:
            try:
                value = await read(store)
            except (NotFound, StorageError, OfflineError) as exc:
                log.warning(
                    "instance %s not served by store %s: %s", instance.sop_uid, store.name, exc
                )
                continue
            if failure is not None:
                log.warning(
                    "instance %s served from store %s: store %s failed (%s)",
                    instance.sop_uid,
                    store.name,
                    self.store.name,
                    failure,
                )
                await self._record_damage(instance, failure, store.name)
            if self.metrics is not None:
                self.metrics.retrieve_fallbacks.labels(store.name, _reason(failure)).inc()
            return value, store
        if known:
            # No replica serves it: the active copy may have been repaired meanwhile.
            try:
                return await read(self.store), self.store
            except (NotFound, StorageError) as exc:
                raise _as_damage(exc, instance, self.store) from exc
        assert failure is not None
        await self._record_damage(instance, failure, None)
        raise failure

    def _watched(
        self, stream: AsyncIterator[bytes], instance: StoredInstance
    ) -> AsyncIterator[bytes]:
        """The active store's stream, its damage found past the read-ahead recorded (so that
        the client's retry, on any node, is served from a replica at once)."""

        async def watched() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:
                    yield chunk
            except (NotFound, StorageError) as exc:
                damage = _as_damage(exc, instance, self.store)
                await self._record_damage(instance, damage, None)
                raise damage from exc
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

        return watched()

    async def _refresh_damaged(self) -> None:
        """The active store's copies known damaged, read again from the catalogue every
        ``_DAMAGE_REFRESH_SECONDS`` (any node may have found them; repairs clear them)."""
        if self.read_only or not self.fallbacks:
            return
        now = time.monotonic()
        if now - self._damaged_read_at < _DAMAGE_REFRESH_SECONDS:
            return
        self._damaged_read_at = now
        try:
            async with self.db.acquire() as conn:
                rows = await conn.fetch(q("read_repairs_open"), self.store.name)
        except VnaError as exc:
            log.warning("could not read the damaged copies of store %s: %s", self.store.name, exc)
            return
        self._damaged = {r["object_key"] for r in rows}

    async def _record_damage(
        self, instance: StoredInstance, failure: VnaError, served_from: str | None
    ) -> None:
        """A read found the active store's copy missing, corrupt or unreadable: counted,
        logged, and (first detection of it) recorded in ``read_repairs`` with an audit row
        and, when replicas are declared, a ``repair-object`` job, in one transaction."""
        if self.read_only:
            # A DR drill reading a replica: its own report judges each copy.
            return
        outcome = failure.outcome if isinstance(failure, DamagedObject) else "unreadable"
        key = instance.object_key
        if self.fallbacks:
            self._damaged.add(key)
        if self.metrics is not None:
            self.metrics.damaged_reads.labels(self.store.name, outcome).inc()
        log.error(
            "instance %s: the copy on store %s is %s (%s); %s",
            instance.sop_uid,
            self.store.name,
            outcome,
            failure,
            f"served from {served_from}" if served_from else "no other store served it",
        )
        if outcome == "unreadable" and not self.repair:
            # The store failing for a moment, with no replica to repair from and nothing to
            # read back: logged and counted, not recorded as a damaged copy for ever.
            return
        try:
            async with self.db.transaction() as conn:
                first = await conn.fetchval(
                    q("read_repair_record"),
                    self.store.name,
                    key,
                    outcome,
                    str(failure)[:1000],
                    served_from,
                )
                if not first:
                    return
                if self.repair:
                    await conn.execute(q("read_repair_enqueue"), key, self.store.name)
                await audit.record(
                    conn,
                    actor="retrieve",
                    origin="read",
                    action="damaged-copy",
                    outcome="failure",
                    study_uid=instance.study_uid,
                    series_uid=instance.series_uid,
                    sop_uid=instance.sop_uid,
                    detail={
                        "store": self.store.name,
                        "object_key": key,
                        "outcome": outcome,
                        "detail": str(failure)[:1000],
                        "served_from": served_from,
                        "repair_queued": self.repair,
                    },
                )
        except VnaError as exc:
            # The reader is answered all the same; the next read that finds it records it.
            log.error("could not record the damaged copy of %s: %s", key, exc)

    async def verify(self, instance: StoredInstance) -> None:
        """Read the whole object from the active store, as a retrieve would (decompressed and
        checked as it streams), and check its SHA-256 and size against the catalogue; raise
        StorageError (DamagedObject: damaged), NotFound (missing) or OfflineError (offline
        tier) otherwise.

        For Storage Commitment (PS3.4 J.3.3): the archive takes responsibility for an instance
        only for a copy it has just read back.  Replicas are not tried (their copies are
        verified by replication and counted separately), no restore is queued and no access
        time recorded: checking is not a retrieve.
        """
        if instance.compression not in _FORMS:
            raise StorageError(f"unknown object compression {instance.compression!r}")
        async for _chunk in await _prepared(self.store, instance):
            pass

    async def read(self, instance: StoredInstance) -> bytes:
        chunks = [c async for c in await self.open(instance)]
        return b"".join(chunks)

    # --- frames and bulk data: byte ranges of the original object ------------------------------

    async def layout(self, instance: StoredInstance) -> ObjectLayout | None:
        """Where the instance's frames and bulk values sit (vna.dicom.frames): recorded at
        ingest, else taken from the whole object once and recorded (objects stored before
        layouts were, single-frame images).  None when offsets do not map onto the object's
        values (deflated, big endian): ``frames`` then parses the whole object."""
        cached = self._layouts.get(instance.sha256)
        if cached is not None:
            return cached if isinstance(cached, ObjectLayout) else None
        doc = None
        if self._unrecorded_seen.pop(instance.sha256, None) is None:
            async with self.db.acquire() as conn:
                doc = await conn.fetchval(q("object_layout"), instance.sha256)
        layout = ObjectLayout.from_json(doc) if doc is not None else None
        if layout is None:
            data = await self._read_whole(instance)
            if len(data) > _THREAD_THRESHOLD * 8:
                layout = await asyncio.to_thread(object_layout, data, instance.transfer_syntax)
            else:  # a walk over a few element headers: less than a thread hop
                layout = object_layout(data, instance.transfer_syntax)
            if len(data) <= _RECENT_OBJECT_MAX:
                # The frame or header read that follows in this request (a single-frame
                # image's frame is nearly all of it) is served from these bytes.
                _READ_WHOLE.set((instance.sha256, data))
            if layout is not None and not self.read_only:
                self._record_later(instance.sha256, layout)
        self._layouts.put(instance.sha256, layout if layout is not None else False)
        return layout

    async def record_layout(self, instance: StoredInstance) -> ObjectLayout | None:
        """Find and record the layout of an instance stored before layouts were (the
        lifecycle's viewer upkeep): the object read whole from the active store and checked
        against the catalogued SHA-256 and size as ``verify`` checks it; no access time
        recorded and no restore queued (upkeep is not a retrieve).  Recorded even for a single
        native frame: the object has been read for it.  None when offsets do not map."""
        if instance.compression not in _FORMS:
            raise StorageError(f"unknown object compression {instance.compression!r}")
        # Decoded and checked as every read is (DamagedObject when the copy is not the
        # catalogued content: no layout is recorded from it).
        data = b"".join([chunk async for chunk in await _prepared(self.store, instance)])
        layout = await asyncio.to_thread(object_layout, data, instance.transfer_syntax)
        if layout is not None:
            async with self.db.acquire() as conn:
                await conn.execute(q("record_object_layout"), instance.sha256, layout.to_json())
        self._layouts.put(instance.sha256, layout if layout is not None else False)
        return layout

    async def _read_whole(self, instance: StoredInstance) -> bytes:
        """The whole object as received: a small uncompressed one in one ranged read of the
        active store (one thread hop, not a stream's three) checked against its SHA-256, else
        as ``read`` streams it (decompressed and checked; replicas tried and checked)."""
        if instance.compression == "none" and 0 < instance.size <= _RECENT_OBJECT_MAX:
            try:
                data = await self.store.read_range(instance.object_key, 0, instance.size)
            except (NotFound, StorageError):
                data = b""  # the stream below tries the replicas
            except OfflineError as exc:
                raise await self._offline([instance]) from exc
            # Checked like every read (a few milliseconds for 4 MiB): a damaged copy of the
            # right size goes the way of the stream below, which heals from a replica.
            if len(data) == instance.size and hashlib.sha256(data).hexdigest() == instance.sha256:
                if not self.read_only:
                    self._touch(instance.sop_uid)
                return data
        return await self.read(instance)

    def _record_later(self, sha256: str, layout: ObjectLayout) -> None:
        """Queue the layout for the next batched write: one statement for the first frames of
        a whole series, instead of a commit per instance.  A layout is a cache of what the
        object's bytes say: one lost in a crash is found again by the next retrieve."""
        self._unrecorded[sha256] = layout
        if self._layout_writer is None or self._layout_writer.done():
            self._layout_writer = asyncio.get_running_loop().create_task(self._write_layouts())

    async def _write_layouts(self) -> None:
        await asyncio.sleep(_LAYOUT_FLUSH_SECONDS)
        await self.flush_layouts()

    async def flush_layouts(self) -> None:
        """Write the layouts found since the last write (one statement)."""
        if not self._unrecorded:
            return
        batch, self._unrecorded = self._unrecorded, {}
        try:
            async with self.db.acquire() as conn:
                await conn.execute(
                    q("record_object_layouts"),
                    list(batch),
                    [json.dumps(layout.to_json()) for layout in batch.values()],
                )
        except VnaError as exc:
            log.warning("could not record the layouts of %d object(s): %s", len(batch), exc)

    async def bulk_layouts(
        self, study_uid: str, series_uid: str | None, sop_uid: str | None
    ) -> dict[str, ObjectLayout]:
        """The recorded layouts of the instances of a study, series or instance (those that
        have one), by SOP Instance UID: the BulkDataURIs of their metadata."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(q("bulk_layouts_of_study"), study_uid, series_uid, sop_uid)
        out = {}
        for row in rows:
            layout = self._layouts.get(row["sha256"]) or ObjectLayout.from_json(row["layout"])
            if layout is not None:
                out[row["sop_uid"]] = layout
                # A viewer asks for frames right after the metadata: they find it here.
                self._layouts.put(row["sha256"], layout)
        return out

    async def frames(self, instance: StoredInstance, numbers: Sequence[int]) -> list[bytes]:
        """Frames ``numbers`` (1-based, in the order asked, repeats kept) of the instance's
        pixel data: each one ranged read of the object (PS3.5 A.4 for encapsulated data)."""
        layout = await self.layout(instance)
        if layout is None:
            parsed = await asyncio.to_thread(parsed_pixels, await self.read(instance))
            if parsed is None:
                raise NotFound(f"instance {instance.sop_uid} has no pixel data")
            pixels, value = parsed
            out = []
            for n in numbers:
                start, length = pixels.span(n)
                out.append(cut_frame(pixels, n, value[start : start + length]))
            return out
        if layout.pixels is None:
            raise NotFound(f"instance {instance.sop_uid} has no pixel data")
        pixels = layout.pixels
        spans = [pixels.span(n) for n in numbers]  # NotFound for a frame past the last
        return list(
            await asyncio.gather(
                *(self._frame(instance, pixels, n, s) for n, s in zip(numbers, spans, strict=True))
            )
        )

    async def header_and_frames(
        self, instance: StoredInstance, pixels: PixelLayout, numbers: Sequence[int]
    ) -> tuple[bytes, list[bytes]]:
        """What a decoder needs to render or transcode frames ``numbers`` of an instance whose
        pixel layout is known: everything before the Pixel Data value (where pydicom stops
        reading with stop_before_pixels; for encapsulated data, up to the first fragment), and
        the frames.  Frame 1 alone, which is what is asked of every single-frame slice, sits
        right after the header: the two come in one ranged read, the frame's part checked by
        its CRC-32 as a frame read alone is."""
        header_end = pixels.starts[0] if pixels.encapsulated else pixels.value_offset
        if list(numbers) == [1]:
            start, length = pixels.span(1)
            if start == header_end:
                data = await self.read_span(
                    instance, 0, start + length, crc=pixels.crc(1), crc_from=start
                )
                return data[:start], [cut_frame(pixels, 1, data[start:])]
        header = await self.read_span(instance, 0, header_end)
        return header, await self.frames(instance, numbers)

    async def _frame(
        self, instance: StoredInstance, pixels: PixelLayout, number: int, span: tuple[int, int]
    ) -> bytes:
        data = await self.read_span(instance, *span, crc=pixels.crc(number))
        return cut_frame(pixels, number, data)

    async def pixel_layout(self, instance: StoredInstance) -> PixelLayout | None:
        """The pixel layout of an instance (number of frames, native or encapsulated)."""
        layout = await self.layout(instance)
        if layout is not None:
            return layout.pixels
        parsed = await asyncio.to_thread(parsed_pixels, await self.read(instance))
        return None if parsed is None else parsed[0]

    async def bulk_size(self, instance: StoredInstance, path: tuple[str, ...]) -> int:
        """The length of one bulk value (PS3.18 8.6), by its tag path; NotFound if none."""
        layout = await self.layout(instance)
        if layout is None:
            raise NotFound(f"instance {instance.sop_uid} has no bulk data at {'/'.join(path)}")
        return layout.bulk_value(path).length

    async def bulk_value(
        self,
        instance: StoredInstance,
        path: tuple[str, ...],
        start: int = 0,
        end: int | None = None,
    ) -> bytes:
        """Bytes [start, end) of one bulk value, by its tag path: a ranged read of the object."""
        layout = await self.layout(instance)
        if layout is None:
            raise NotFound(f"instance {instance.sop_uid} has no bulk data at {'/'.join(path)}")
        value = layout.bulk_value(path)
        stop = value.length if end is None else min(end, value.length)
        start = min(start, stop)
        # The whole value is checked against its recorded CRC-32; a part of it cannot be.
        crc = value.crc if (start, stop) == (0, value.length) else None
        return await self.read_span(instance, value.offset + start, stop - start, crc)

    async def metadata_entries(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        scope: PatientScope | None = None,
    ) -> list[MetadataEntry]:
        """DICOM JSON of each instance with what its BulkDataURIs need: whether it has pixel
        data, and the layout of its bulk values where recorded."""
        rows = await self._rows(
            ("metadata_of_study", "metadata_of_series", "metadata_of_instance"),
            study_uid,
            series_uid,
            sop_uid,
            scope,
        )
        layouts = await self.bulk_layouts(study_uid, series_uid, sop_uid)
        return [
            MetadataEntry(
                r["metadata"],
                r["study_uid"],
                r["series_uid"],
                r["sop_uid"],
                bool(r["has_pixel_data"]),
                layouts.get(r["sop_uid"]),
            )
            for r in rows
        ]

    async def read_span(
        self,
        instance: StoredInstance,
        start: int,
        length: int,
        crc: int | None = None,
        crc_from: int = 0,
    ) -> bytes:
        """Bytes [start, start + length) of the instance as received, reading only the part
        of the object that holds them.

        What protects them: a range of a seekable compressed object is checked frame by frame
        by the zstandard checksums and the seek table's sizes, a pixel pack's by each frame's
        CRC.  A range of an uncompressed object, which the whole object's SHA-256 cannot check,
        is checked against ``crc`` when its layout recorded one (vna.dicom.frames: every frame
        and every whole bulk value; ``crc_from``: the CRC-32 is of the range's bytes from
        there on, a frame read together with the header before it); without one, a range of
        at least half the object is served from the whole object read and checked, for about
        the same cost, and a smaller one (the header reads of rendering and transcoding, a
        part of a bulk value) is as the store keeps it (S3 checks ChecksumSHA256 on write,
        the filesystem store fsyncs, fixity runs check whole objects), a missing or short
        object showing.  A single-frame compressed object (written before the seekable form)
        is decompressed whole and checked as ``open`` checks it, and its conversion to the
        seekable form is queued.  A damaged, truncated or missing copy is read from a replica
        instead (``_from_any``) and its repair queued.
        """
        if start < 0 or length < 0 or start + length > instance.size:
            raise StorageError(
                f"range {start}+{length} is outside instance {instance.sop_uid}"
                f" of {instance.size} bytes"
            )
        if not self.read_only:
            self._touch(instance.sop_uid)
        recent = _READ_WHOLE.get()
        if recent is not None and recent[0] == instance.sha256:
            return recent[1][start : start + length]
        try:
            if instance.compression == "none":
                if crc is None and 2 * length >= instance.size:
                    # Checked whole (one ranged read for a small object), healed if damaged.
                    data = await self._read_whole(instance)
                    return data[start : start + length]
                data, _ = await self._from_any(
                    instance,
                    lambda store: _plain_range(store, instance, start, length, crc, crc_from),
                )
                return data
            if instance.compression in pixelpack.IMAGE_CODECS:
                return await self._pack_span(instance, start, length)
            if instance.compression != "zstd":
                raise StorageError(f"unknown object compression {instance.compression!r}")
            if not seekable.is_seekable_key(instance.object_key):
                await self._queue_reformat(instance)
                return (await self.read(instance))[start : start + length]
            data, _ = await self._from_any(
                instance, lambda store: self._seekable_range(store, instance, start, length)
            )
            return data
        except OfflineError as exc:
            raise await self._offline([instance]) from exc

    async def _pack_span(self, instance: StoredInstance, start: int, length: int) -> bytes:
        """Bytes of the original from a pixel pack: only the segments holding them are read
        and decoded (one frame of a multi-frame image decodes that frame alone)."""
        index = await self.pack_index(instance)
        first, last = index.segments_for(start, length)
        segs = index.segments[first:last]
        stored = await self._ranged(
            instance,
            segs[0].stored_start,
            segs[-1].stored_start + segs[-1].stored_length - segs[0].stored_start,
        )

        def decode() -> bytes:
            return b"".join(
                pixelpack.decode_segments(stored, index, first, last, instance.object_key)
            )

        data = await asyncio.to_thread(decode) if len(segs) > 1 or segs[0].kind == "f" else decode()
        skip = start - segs[0].start
        return data[skip : skip + length]

    async def pack_index(self, instance: StoredInstance) -> pixelpack.PackIndex:
        """The index of an instance kept as a pixel pack (footer and index: two ranged reads,
        then cached)."""
        key = instance.object_key
        cached = self._seek_tables.get(key)
        if isinstance(cached, pixelpack.PackIndex):
            return cached
        info = None
        for store in (self.store, *self.fallbacks):  # the replica that serves it, in DR
            with contextlib.suppress(StorageError):
                info = await store.stat(key)
            if info is not None:
                break
        if info is None:
            raise NotFound(f"object {key} not in store {self.store.name}")
        footer = await self._ranged(
            instance, info.size - pixelpack.FOOTER_SIZE, pixelpack.FOOTER_SIZE
        )
        n = pixelpack.index_size(footer, key)
        index = pixelpack.parse_index(await self._ranged(instance, info.size - n, n), key)
        if index.size != instance.size:
            raise StorageError(f"pixel pack {key} does not describe the catalogued instance")
        self._seek_tables.put(key, index)
        return index

    async def stored_frame(self, instance: StoredInstance, number: int) -> tuple[str, bytes] | None:
        """Frame ``number`` (1-based) as the image codec stored it, without decoding: (its
        transfer syntax, the codestream an encapsulated frame of that syntax carries), or
        None when the instance is not kept as a pixel pack.  For transcoding on retrieve:
        a request for the codec's own syntax is answered from these bytes.  Signed samples
        are coded as DICOM codes them in JPEG-LS (the Bits Stored pattern, unsigned), and in
        HTJ2K the same way (vna.dicom.pixel_codecs): decoders apply Pixel Representation.
        The codestream is not checked here (its CRC covers the decoded frame); a decoder that
        reads it checks it, and fixity runs check whole objects."""
        if instance.compression not in pixelpack.IMAGE_CODECS:
            return None
        index = await self.pack_index(instance)
        start, length = pixelpack.frame_payload(index, number)
        if not self.read_only:
            self._touch(instance.sop_uid)
        try:
            return index.syntax, await self._ranged(instance, start, length)
        except OfflineError as exc:
            raise await self._offline([instance]) from exc

    async def _ranged(self, instance: StoredInstance, start: int, length: int) -> bytes:
        """A byte range of the stored object (a pixel pack's index or segments) from the active
        store, or a replica when that copy is missing, short or unreadable (recorded as
        damage).  The segments' own checks (CRC of each decoded frame) catch other damage."""
        data, _ = await self._from_any(
            instance,
            lambda store: _plain_range(store, instance, start, length),
        )
        return data

    async def _seekable_range(
        self, store: ObjectStore, instance: StoredInstance, start: int, length: int
    ) -> bytes:
        """The range read from ``store`` through its own seek table; anything that shows the
        copy is not the catalogued one raises DamagedObject."""
        key = instance.object_key
        try:
            table = await self._seek_table(store, instance)
            if table.size != instance.size:
                raise DamagedObject(f"object {key}: seek table size mismatch")
            first, last = table.frames_for(start, length)
            compressed = await store.read_range(
                key, table.compressed[first], table.compressed[last] - table.compressed[first]
            )
            try:
                data = await _off_loop(
                    seekable.decompress_frames, compressed, table, first, last, key
                )
            except StorageError as exc:
                raise DamagedObject(str(exc)) from exc
        except DamagedObject:
            self._seek_tables.pop((store.name, key), None)
            raise
        skip = start - table.decompressed[first]
        return cast(bytes, data[skip : skip + length])

    async def _seek_table(self, store: ObjectStore, instance: StoredInstance) -> seekable.SeekTable:
        key = instance.object_key
        cached = self._seek_tables.get((store.name, key))
        if cached is not None:
            return cast(seekable.SeekTable, cached)
        info = await store.stat(key)
        if info is None:
            raise NotFound(f"object {key} not in store {store.name}")
        size = info.size
        if size < seekable.FOOTER_SIZE:
            raise DamagedObject(f"compressed object {key} is truncated (no seek table)")
        footer = await store.read_range(key, size - seekable.FOOTER_SIZE, seekable.FOOTER_SIZE)
        try:
            n = seekable.table_size(footer, key)
        except (StorageError, struct.error) as exc:
            raise DamagedObject(str(exc)) from exc
        if n > size:
            raise DamagedObject(f"compressed object {key} has a damaged seek table")
        raw = await store.read_range(key, size - n, n)
        try:
            table = seekable.parse_table(raw, key)
        except (StorageError, struct.error) as exc:
            raise DamagedObject(str(exc)) from exc
        if table.compressed[-1] + n != size:
            raise DamagedObject(f"compressed object {key}: the seek table does not describe it")
        self._seek_tables.put((store.name, key), table)
        return table

    async def _queue_reformat(self, instance: StoredInstance) -> None:
        """Queue the rewrite of a single-frame compressed object in the seekable form (once
        per object however many reads ask), so that its next frames are ranged reads."""
        if self.read_only or instance.object_key in self._seek_tables:
            return
        self._seek_tables.put(instance.object_key, None)
        try:
            async with self.db.acquire() as conn:
                await conn.execute(q("enqueue_recompression"), instance.object_key)
        except VnaError as exc:
            log.warning("could not queue recompression of %s: %s", instance.object_key, exc)

    async def ensure_online(self, instances: Iterable[StoredInstance]) -> None:
        """Raise OfflineError (after queueing their restores) if any of these instances sits in
        an offline tier without a restored copy.

        For a gateway about to stream several instances in one response: it cannot turn a
        200 into a 503 once the first part is out.  Only instances the catalogue places in an
        offline tier are checked (one HEAD each), so hot retrieves cost nothing more.
        """
        offline_tiers = self.store.offline_tiers
        suspects = [i for i in instances if i.tier in offline_tiers]
        if not suspects:
            return
        slots = asyncio.Semaphore(_STAT_CONCURRENCY)

        async def unavailable(instance: StoredInstance) -> bool:
            async with slots:
                info = await self.store.stat(instance.object_key)
            return info is not None and not info.available

        flags = await asyncio.gather(*(unavailable(i) for i in suspects))
        missing = [i for i, flag in zip(suspects, flags, strict=True) if flag]
        if missing:
            raise await self._offline(missing)

    async def _offline(self, instances: list[StoredInstance]) -> OfflineError:
        """Queue a restore of each object and describe the wait."""
        keys = {i.object_key: i.sop_uid for i in instances}
        if self.read_only:
            return OfflineError(
                f"{len(keys)} object(s) in offline storage of store {self.store.name}",
                retry_after_seconds=3600,
            )
        try:
            async with self.db.acquire() as conn:
                await conn.execute(q("enqueue_restores"), list(keys), list(keys.values()))
        except VnaError as exc:
            # The reader still gets a clear retry-later answer; the next attempt queues again.
            log.error("could not queue restores of %d object(s): %s", len(keys), exc)
        wait = max((self.store.restore_seconds(i.tier) for i in instances), default=0) or 3600
        what = (
            f"instance {instances[0].sop_uid}"
            if len(instances) == 1
            else (f"{len(instances)} instances")
        )
        return OfflineError(
            f"{what} in offline storage: a restore has been requested, retry later",
            retry_after_seconds=wait,
        )

    # --- access times -----------------------------------------------------------------------

    def _touch(self, sop_uid: str) -> None:
        self._touched.add(sop_uid)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        if len(self._touched) >= _MAX_PENDING_TOUCHES:
            self._flush_now.set()

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self.access_flush_seconds)
            self._flush_now.clear()
            await self.flush_access_times()

    async def flush_access_times(self) -> None:
        """Write the batched access times (one UPDATE for all instances retrieved since)."""
        if not self._touched:
            return
        batch, self._touched = self._touched, set()
        try:
            async with self.db.acquire() as conn:
                await conn.execute(q("touch_instances"), list(batch), dt.datetime.now(dt.UTC))
        except VnaError as exc:
            # Losing an access time only delays tiering; keep it for the next flush.
            log.warning("could not record access times of %d instance(s): %s", len(batch), exc)
            if len(self._touched) < _MAX_PENDING_TOUCHES:
                self._touched |= batch

    async def close(self) -> None:
        """Stop the flushers and write what they have batched."""
        if self._layout_writer is not None:
            self._layout_writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._layout_writer
            self._layout_writer = None
        await self.flush_layouts()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush_access_times()


async def _off_loop(func: Any, *args: Any) -> Any:
    """Decompression of more than a MiB in a worker thread (zstandard releases the GIL); less
    inline: a frame's few zstd frames take about a millisecond, less than a thread hop costs
    on a busy machine (measured with bench/frames.py)."""
    if len(args[0]) > _RANGE_THREAD_THRESHOLD:
        return await asyncio.to_thread(func, *args)
    return func(*args)


async def _opened(store: ObjectStore, key: str) -> tuple[bytes, AsyncIterator[bytes]]:
    chunks = store.iter_chunks(key)
    try:
        return await anext(chunks), chunks
    except StopAsyncIteration:
        return b"", chunks


async def _prepared(store: ObjectStore, instance: StoredInstance) -> AsyncIterator[bytes]:
    """The instance's bytes from ``store``: decompressed, checked against the catalogue as they
    stream, and the first ``_READ_AHEAD`` of them already read (damage in them raised here)."""
    first, chunks = await _opened(store, instance.object_key)
    stream = _chained(first, chunks)
    if instance.compression == "zstd":
        across = seekable.is_seekable_key(instance.object_key)
        stream = _decompressed(stream, instance, across_frames=across)
    elif instance.compression in pixelpack.IMAGE_CODECS:
        stream = _unpacked(stream, instance)
    return await _read_ahead(_checked(stream, instance, store.name), _READ_AHEAD)


async def _read_ahead(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """``stream`` with its first ``limit`` bytes (or all of it) read now: what it raises in
    them is raised here, before a caller sends anything."""
    buffered: list[bytes] = []
    size = 0
    done = False
    try:
        while size < limit:
            try:
                chunk = await anext(stream)
            except StopAsyncIteration:
                done = True
                break
            buffered.append(chunk)
            size += len(chunk)
    except BaseException:
        await _aclose(stream)
        raise

    async def rest() -> AsyncIterator[bytes]:
        try:
            for chunk in buffered:
                yield chunk
            buffered.clear()
            if not done:
                async for chunk in stream:
                    yield chunk
        finally:
            await _aclose(stream)

    return rest()


async def _checked(
    chunks: AsyncIterator[bytes], instance: StoredInstance, store: str
) -> AsyncIterator[bytes]:
    """The instance's bytes checked against the catalogued SHA-256 and size as they stream;
    the last chunk is held back until the check passed, so a damaged copy is never delivered
    whole (the reader sees a read cut short, not other bytes passing for the instance)."""
    digest = hashlib.sha256()
    size = 0
    held: bytes | None = None
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            digest.update(chunk)
            size += len(chunk)
            if size > instance.size:
                break
            if held is not None:
                yield held
            held = chunk
    finally:
        await _aclose(chunks)
    if size != instance.size or digest.hexdigest() != instance.sha256:
        what = "longer" if size > instance.size else "shorter" if size < instance.size else ""
        raise DamagedObject(
            f"the copy of instance {instance.sop_uid} on store {store} ({instance.object_key})"
            " is not the catalogued content"
            + (f": {what} than its {instance.size} bytes" if what else ": other SHA-256")
        )
    if held is not None:
        yield held


async def _plain_range(
    store: ObjectStore,
    instance: StoredInstance,
    start: int,
    length: int,
    crc: int | None = None,
    crc_from: int = 0,
) -> bytes:
    data = await store.read_range(instance.object_key, start, length)
    if len(data) != length:
        raise DamagedObject(
            f"the copy of instance {instance.sop_uid} on store {store.name} is shorter than"
            " catalogued"
        )
    if crc is not None and zlib.crc32(memoryview(data)[crc_from:]) != crc:
        raise DamagedObject(
            f"the copy of instance {instance.sop_uid} on store {store.name} is not the"
            f" catalogued content: bytes {start + crc_from}+{length - crc_from} fail their"
            " recorded CRC-32"
        )
    return data


def _as_damage(exc: VnaError, instance: StoredInstance, store: ObjectStore) -> VnaError:
    """A failure of a store holding a catalogued object: missing is damage (not a 404: the
    catalogue says the archive holds it), other failures as they are (unreadable)."""
    if isinstance(exc, NotFound):
        damage = DamagedObject(
            f"the copy of instance {instance.sop_uid} is missing from store {store.name}"
            f" ({instance.object_key})",
            "missing",
        )
        damage.__cause__ = exc
        return damage
    return exc


def _reason(failure: VnaError | None) -> str:
    """The ``reason`` label of vna_retrieve_fallbacks."""
    if failure is None:
        return "known-damaged"
    if isinstance(failure, DamagedObject):
        return failure.outcome
    return "error"


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def _counted(chunks: AsyncIterator[bytes], metrics: Metrics) -> AsyncIterator[bytes]:
    """The bytes as delivered (decompressed), counted as they go: a retrieve cut short counts
    what was read."""
    try:
        async for chunk in chunks:
            metrics.retrieve_bytes.inc(len(chunk))
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def _decompressed(
    chunks: AsyncIterator[bytes], instance: StoredInstance, *, across_frames: bool = False
) -> AsyncIterator[bytes]:
    """The original bytes of a zstandard-compressed object, verified as they stream: the frame
    checksum (written at compression) catches corruption, the catalogued size truncation.
    ``across_frames``: the seekable form (vna.storage.seekable), many frames and a seek table
    in a skippable frame that the decoder passes over; each frame has its checksum, and a
    missing frame shows as a short size."""
    decompressor = zstandard.ZstdDecompressor().decompressobj(read_across_frames=across_frames)
    produced = 0
    try:
        async for chunk in chunks:
            try:
                if len(chunk) > _THREAD_THRESHOLD:
                    out = await asyncio.to_thread(decompressor.decompress, chunk)
                else:
                    out = decompressor.decompress(chunk)
            except zstandard.ZstdError as exc:
                raise DamagedObject(
                    f"compressed object {instance.object_key} is corrupt: {exc}"
                ) from exc
            if out:
                produced += len(out)
                yield out
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if (not across_frames and not decompressor.eof) or produced != instance.size:
        raise DamagedObject(
            f"compressed object {instance.object_key} is truncated: {produced} of"
            f" {instance.size} bytes"
        )


async def _unpacked(chunks: AsyncIterator[bytes], instance: StoredInstance) -> AsyncIterator[bytes]:
    """The original bytes of a pixel pack (vna.storage.pixelpack): the stored object is read
    whole (it is the compressed form, a fraction of the original), then its segments are
    decoded one by one as the consumer takes them (frames in a worker thread), each checked
    by its CRC-32; the whole is checked against the catalogued SHA-256 and size by
    ``_checked``, which every read of an object goes through."""
    try:
        stored = b"".join([chunk async for chunk in chunks])
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    key = instance.object_key
    if len(stored) > _RANGE_THREAD_THRESHOLD:  # a large index (many frames) off the loop
        index = await asyncio.to_thread(pixelpack.read_index, stored, key)
    else:
        index = pixelpack.read_index(stored, key)
    if not index.segments:
        return
    base = index.segments[0].stored_start
    body = memoryview(stored)[base:]

    def decode(first: int, last: int) -> bytes:
        return b"".join(
            pixelpack.decode_segments(
                body[index.segments[first].stored_start - base :], index, first, last, key
            )
        )

    # Segments decoded in batches of about a MiB of original bytes: one thread hop each.
    start = pending = 0
    for i, seg in enumerate(index.segments):
        pending += seg.length
        if pending >= _RANGE_THREAD_THRESHOLD or i == len(index.segments) - 1:
            yield await asyncio.to_thread(decode, start, i + 1)
            start, pending = i + 1, 0


def _scope_args(scoped: ScopedIdentities | None) -> tuple[list[str] | None, ...]:
    """The last three parameters of the retrieve queries: issuers, then PatientIDs and issuers
    of single identities; all NULL when the caller is not scoped."""
    if scoped is None:
        return (None, None, None)
    return (
        list(scoped.issuers),
        [i for i, _ in scoped.identities],
        [issuer for _, issuer in scoped.identities],
    )


def _check_uid(name: str, value: str) -> None:
    # UIDs reach SQL only as bound parameters, but a malformed one deserves a 400, not a 404.
    if not is_valid_uid(value):
        raise InvalidRequest(f"{name} is not a valid UID: {value[:80]!r}")


def stored_instance(r: Any) -> StoredInstance:
    """A StoredInstance from a catalogue row with the columns of the retrieve queries."""
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
