"""Ingest one DICOM instance: parse, normalise, hash, dedup, write the object, commit the
catalogue.

The order is the archive's durability promise: the object is durable before the catalogue
sees it, and the caller is answered only after the catalogue commit.  A crash in between
leaves an orphan object (content-addressed, so harmless and adoptable), never a catalogue row
without its object.  Follow-up work (compression, replication) is queued in the same
transaction as the instance row (an outbox), so it cannot be lost either.

Normalisation (``vna.dicom.normalise``) runs on the parsed header in memory.  When it changes
nothing, the received file is stored as it is, bit-exact; otherwise a new Part 10 file is
written with the changed header and the original pixel data bytes (``vna.dicom.rewrite``), and
that file is the stored object.  Resends are still recognised by the data set as received.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import hashlib
import io
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from vna.catalog import audit, rejections
from vna.catalog.database import Database
from vna.catalog.patient_links import filed_identity, record_pending_link
from vna.catalog.queries import q
from vna.config import IngestSettings, SourceSettings
from vna.dicom.corrections import STUDY_ATTRIBUTES
from vna.dicom.frames import layout_of_file, worth_recording
from vna.dicom.iocm import RejectionNote, rejection_note
from vna.dicom.normalise import Normalised, correct, normalise
from vna.dicom.parse import (
    InstanceHeader,
    data_set_offset,
    dicom_json,
    extract_header,
    read_dataset,
)
from vna.dicom.rewrite import write_with_header
from vna.errors import (
    InstanceConflict,
    InstanceRef,
    InstanceTooLarge,
    InvalidInstance,
    StudyMismatch,
    VnaError,
)
from vna.ingest import filing
from vna.ingest.decision import Decision, Existing, decide
from vna.ingest.group import FilingGroup
from vna.metrics import Metrics
from vna.storage.base import FileStamp, ObjectStore, content_key

log = logging.getLogger(__name__)
_HASH_CHUNK = 1 << 20
#: Instances up to this size are examined in memory (one examining thread per process, so
#: one such buffer at a time); larger ones, multi-frame and video, from the file in chunks.
_IN_MEMORY_BYTES = 64 << 20
_T = TypeVar("_T")


@dataclass(frozen=True)
class Sender:
    """Who is storing: the source profile and, for the audit trail, the actor and address."""

    source: SourceSettings
    protocol: str  # "stow-rs", "dimse", "import"
    actor: str  # calling AE title, token name or operating-system user
    origin: str = ""  # peer address


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    #: Another version of the instance was archived; this one replaced it (policy "replace").
    REPLACED = "replaced"
    #: Another version of the instance was archived; this one is stored in quarantine, for an
    #: administrator to accept or discard (policy "keep-both").
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    size: int
    #: Non-fatal remarks (coercions); protocol layers turn them into warning statuses.
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Examined:
    header: InstanceHeader
    metadata: dict[str, Any]
    #: Of the whole Part 10 file as received.
    sha256: str
    #: Of the data set alone as received: what a resend is recognised by.
    data_set_sha256: str
    size: int
    normalised: Normalised
    #: The version of the received file the hashes were taken of.
    stamp: FileStamp


@dataclass(frozen=True)
class _Object:
    """The file to store: the received one, or the normalised one written beside it."""

    path: Path
    sha256: str
    data_set_sha256: str
    size: int
    written: bool
    #: The version of the file ``sha256`` was taken of, when known.
    stamp: FileStamp | None = None


@dataclass(frozen=True)
class _Filing:
    """An instance whose object is durable, still to be filed in the catalogue.

    It holds no parsed data set: a data set read from memory keeps the whole received file
    alive, and a grouped instance may wait for its request's others (vna.ingest.group)."""

    version: filing.Version
    #: Of its audit record.
    detail: dict[str, Any]
    warnings: tuple[str, ...]
    #: Of the data set as received, and the file's size as received.
    received_sha256: str
    received_size: int
    #: The first look found a version archived (so it is not the plain new case).
    seen: bool


class Ingester:
    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        settings: IngestSettings,
        metrics: Metrics,
        *,
        scratch_dir: Path | None = None,
        modifying_system: str = "VNA",
        unused_object_grace_seconds: int = 3600,
    ) -> None:
        self.db = db
        self.store = store
        self.settings = settings
        self.metrics = metrics
        #: Where normalised files are written before they are stored (the incoming directory:
        #: on the data volume, so the filesystem store renames instead of copying).
        self.scratch_dir = scratch_dir or Path(tempfile.gettempdir())
        #: Modifying System (0400,0563) in Original Attributes Sequence items.
        self.modifying_system = modifying_system
        #: Delay before an object written for an instance that another sender filed first is
        #: deleted (``lifecycle.delete_grace_seconds``; see ``_forget_unfiled``).
        self.unused_object_grace_seconds = unused_object_grace_seconds
        # Bounds the instances in flight (catalogue connections, files being made durable) so
        # a burst of senders queues here instead of exhausting the pool or memory.
        self._slots = asyncio.Semaphore(settings.concurrency)
        # Examining an instance (header parse, hashes) is CPU work, mostly under the GIL.  One
        # thread does it for the whole process: several would only take turns at the GIL, and
        # each turn costs a context switch and cold caches (measured: about 0.7 ms more CPU
        # per CT slice with 8 in parallel than with one).  The waits (fsync, the catalogue)
        # still overlap, in the I/O threads and the event loop.  ``vna serve`` runs one
        # process per core for the rest.
        self._cpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vna-examine")

    def close(self) -> None:
        self._cpu.shutdown(wait=False, cancel_futures=True)

    async def _cpu_bound(self, func: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._cpu, func, *args)

    async def ingest_file(
        self,
        path: Path,
        sender: Sender,
        *,
        consume: bool = True,
        expected_study_uid: str | None = None,
        group: FilingGroup | None = None,
    ) -> IngestResult:
        """Ingest the Part 10 file at ``path``.

        With ``consume`` the pipeline takes the file over: it is moved into the store or removed,
        whatever the outcome.  ``expected_study_uid`` refuses an instance of another study
        (STOW-RS to ``/studies/{study}``, PS3.18 10.5.1).  With ``group``, a new instance is
        filed in the catalogue together with the group's others (one STOW-RS request:
        vna.ingest.group).  Raises a VnaError subclass when the instance is refused; its
        ``instance`` attribute names it when the header was readable.
        """
        started = time.perf_counter()
        header: InstanceHeader | None = None
        note: RejectionNote | None = None
        if group is not None:
            group.join()
        try:
            async with self._slots:
                examined = await self._cpu_bound(self._examine, path, sender.source)
                header = examined.header
                note = rejection_note(examined.metadata)
                if expected_study_uid and header.study_uid != expected_study_uid:
                    raise StudyMismatch(
                        f"instance belongs to study {header.study_uid},"
                        f" not {expected_study_uid} named in the request"
                    )
                step = await self._store(path, examined, sender, consume)
                del examined  # its data set holds the whole file: not while waiting below
                if isinstance(step, _Filing) and (group is None or step.seen):
                    step = await self._file(step, sender)
            if isinstance(step, _Filing):
                assert group is not None
                # Its object is durable: wait for the request's other instances without the
                # slot, and file them together.
                filed = await group.file(
                    filing.NewFiling(step.version, sender.actor, sender.origin, step.detail)
                )
                if filed is not None:
                    step = _result(
                        Outcome.STORED, step.version.header, step.version.size, step.warnings
                    )
                else:
                    async with self._slots:
                        step = await self._file_general(step, sender)
            result = step
            if note is not None and result.outcome is not Outcome.QUARANTINED:
                assert header is not None
                await self._apply_rejection(note, sender, header)
        except VnaError as exc:
            if header is not None and exc.instance is None:
                exc.instance = InstanceRef(header.sop_class_uid, header.sop_instance_uid)
            self.metrics.instance_failures.labels(sender.protocol, type(exc).__name__).inc()
            await self._audit_failure(sender, header, exc)
            raise
        finally:
            if group is not None:
                group.leave()
            if consume:
                path.unlink(missing_ok=True)  # noqa: ASYNC240 - one metadata syscall
        self.metrics.ingest_seconds.observe(time.perf_counter() - started)
        if result.outcome is Outcome.DUPLICATE:
            self.metrics.instances_duplicate.labels(sender.protocol, sender.source.name).inc()
        else:
            self.metrics.instances_stored.labels(sender.protocol, sender.source.name).inc()
            self.metrics.bytes_stored.labels(sender.protocol).inc(result.size)
        return result

    # --- steps ----------------------------------------------------------------------------

    def _examine(self, path: Path, source: SourceSettings) -> _Examined:
        """Blocking part, run in a worker thread: size check, header parse, normalisation (in
        memory), hashes of what was received.

        hashlib releases the GIL on large buffers, so hashing here runs beside the event loop
        on another core.
        """
        with open(path, "rb") as f:
            # Taken before anything is read: a change after it makes the store hash again.
            stamp = FileStamp.of(os.fstat(f.fileno()))
            size = stamp.size
            if size > self.settings.max_instance_bytes:
                raise InstanceTooLarge(
                    f"instance of {size} bytes exceeds the limit of"
                    f" {self.settings.max_instance_bytes} bytes (ingest.max_instance_bytes)"
                )
            # Most instances are read into memory once: pydicom and the framing check read
            # element by element, and on a file each read and tell is a system call that also
            # hands the GIL over (hundreds per CT slice).
            data = f.read() if size <= _IN_MEMORY_BYTES else None
        ds = read_dataset(path if data is None else data)
        try:
            normalised = normalise(
                ds, source, now=dt.datetime.now(dt.UTC), modifying_system=self.modifying_system
            )
        except VnaError:
            raise
        except Exception as exc:  # pydicom raises many types on values it cannot convert
            raise InvalidInstance(f"cannot normalise the header: {exc}") from exc
        for note in normalised.notes:
            log.info("%s: %s", path.name, note)
        header = extract_header(normalised.dataset)
        if data is not None:
            start = data_set_offset(io.BytesIO(data))
            whole = hashlib.sha256(data)
            data_set = hashlib.sha256(memoryview(data)[start:])
        else:
            whole, data_set = hashlib.sha256(), hashlib.sha256()
            with open(path, "rb") as f:
                start = data_set_offset(f)
                f.seek(0)
                whole.update(f.read(start))
                while chunk := f.read(_HASH_CHUNK):
                    whole.update(chunk)
                    data_set.update(chunk)
        return _Examined(
            header=header,
            metadata=dicom_json(normalised.dataset),
            sha256=whole.hexdigest(),
            data_set_sha256=data_set.hexdigest(),
            size=size,
            normalised=normalised,
            stamp=stamp,
        )

    def _refile(
        self, ex: _Examined, values: dict[str, str | None], source: SourceSettings
    ) -> _Examined:
        ds = ex.normalised.dataset
        fixed = correct(
            ds,
            values,
            now=dt.datetime.now(dt.UTC),
            modifying_system=self.modifying_system,
            previous_source=source.name,
        )
        if not fixed.changed:
            return ex
        normalised = Normalised(ds, ex.normalised.changes + fixed.changes, ex.normalised.notes)
        return dataclasses.replace(
            ex, header=extract_header(ds), metadata=dicom_json(ds), normalised=normalised
        )

    def _materialise(self, path: Path, ex: _Examined) -> _Object:
        """A new file with the normalised header and the received pixel data bytes."""
        target = self.scratch_dir / f"{uuid.uuid4().hex}.normalised"
        try:
            w = write_with_header(path, target, ex.normalised.dataset)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return _Object(target, w.sha256, w.data_set_sha256, w.size, written=True)

    async def _store(
        self, path: Path, ex: _Examined, sender: Sender, consume: bool
    ) -> IngestResult | _Filing:
        """Decide on the instance and make its object durable; what is left is its filing in
        the catalogue (or the result, when nothing is to be filed)."""
        h = ex.header
        policy = sender.source.on_conflict
        # A first look without locks, so that a resend (the common case after a network
        # failure) costs one query and writes nothing.
        async with self.db.acquire() as conn:
            look = await conn.fetchrow(
                q("first_look"),
                h.sop_instance_uid,
                h.patient_id,
                h.issuer_of_patient_id,
                h.study_uid,
            )
            row = look if look["id"] is not None else None
            facts = await _facts(conn, row, h.sop_instance_uid, ex.data_set_sha256)
            decision = decide(facts, ex.data_set_sha256, policy)
            if decision is Decision.DUPLICATE:
                return await self._duplicate(conn, sender, h, row, ex.data_set_sha256, ex.size)
            if decision is Decision.CONFLICT:
                raise _conflict(h)
            corrections = await _corrections(conn, h) if look["changed"] else {}
        if corrections:
            # The sender still uses an identity an administrator merged into another patient,
            # or sends more of a study an administrator corrected or moved: file the instance
            # as the change did the earlier ones.
            ex = await self._cpu_bound(self._refile, ex, corrections, sender.source)
            h = ex.header

        if ex.normalised.changed:
            obj = await self._cpu_bound(self._materialise, path, ex)
        else:  # the received file as it is: no thread hop for nothing
            obj = _Object(
                path, ex.sha256, ex.data_set_sha256, ex.size, written=False, stamp=ex.stamp
            )
        key = content_key(obj.sha256)
        layout = await self._cpu_bound(layout_of_file, obj.path, h.transfer_syntax)
        try:
            await self.store.put_file(
                key,
                obj.path,
                sha256=obj.sha256,
                hashed=obj.stamp,
                consume=consume or obj.written,
                metadata=_object_metadata(sender, ex, obj),
            )
        finally:
            if obj.written:
                obj.path.unlink(missing_ok=True)
        if worth_recording(layout):
            assert layout is not None
            # Frames and bulk values of this object are then one ranged read each (WADO-RS,
            # vna.retrieve).  After the object is durable, keyed by its content: a crash
            # before filing leaves a row that the same bytes would write again.
            async with self.db.acquire() as conn:
                await conn.execute(q("record_object_layout"), obj.sha256, layout.to_json())

        version = filing.Version(
            header=h,
            issuer=h.issuer_of_patient_id,
            source=sender.source.name,
            sha256=obj.sha256,
            received_sha256=ex.data_set_sha256,
            data_set_sha256=obj.data_set_sha256,
            size=obj.size,
            object_key=key,
            metadata=ex.metadata,
        )
        warnings = ex.normalised.warnings()
        detail: dict[str, Any] = {
            "protocol": sender.protocol,
            "source": sender.source.name,
            "size": obj.size,
        }
        if ex.normalised.changed:
            detail["coerced"] = [c.describe() for c in ex.normalised.changes][:50]
        return _Filing(version, detail, warnings, ex.data_set_sha256, ex.size, seen=row is not None)

    async def _file(self, f: _Filing, sender: Sender) -> IngestResult:
        if not f.seen:
            # No version was archived a moment ago: most likely still none, and the filing is
            # one statement.  Otherwise it wrote nothing, and the general path decides.
            async with self.db.acquire() as conn:
                inserted = await filing.file_new_instance(
                    conn, f.version, actor=sender.actor, origin=sender.origin, detail=f.detail
                )
            if inserted is not None:
                return _result(Outcome.STORED, f.version.header, f.version.size, f.warnings)
        return await self._file_general(f, sender)

    async def _file_general(self, f: _Filing, sender: Sender) -> IngestResult:
        """File under the instance's row lock, whatever is archived already.

        The object of ``f`` is already written.  When another sender filed this instance
        between the first look and the lock (two archive nodes receiving the same study at
        once, over STOW-RS on one and C-STORE on the other), the decision is now a resend or a
        conflict and nothing refers to that object: its key differs from the archived one
        whenever the File Meta Information differs.  It is queued for deletion instead of
        being left as an orphan.
        """
        try:
            result = await self._file_locked(f, sender)
        except InstanceConflict:
            await self._forget_unfiled(f.version.object_key)
            raise
        if result.outcome is Outcome.DUPLICATE:
            await self._forget_unfiled(f.version.object_key)
        return result

    async def _forget_unfiled(self, key: str) -> None:
        """Queue the deletion of an object this ingest wrote and did not file, unless a
        catalogue row refers to it (the same bytes, archived).  Deleted after the grace
        period, and only if still unused then (the ``delete-object`` job checks again), so
        that a sender storing the same bytes at this moment keeps them."""
        try:
            async with self.db.acquire() as conn:
                await conn.execute(
                    q("enqueue_unused_object_delete"), key, float(self.unused_object_grace_seconds)
                )
        except VnaError as exc:
            # The sender's answer does not depend on it; the object stays an orphan, which
            # ``vna verify --all`` lists.
            log.warning("object %s written for a resend is left in the store: %s", key, exc)

    async def _file_locked(self, f: _Filing, sender: Sender) -> IngestResult:
        version, detail, warnings = f.version, f.detail, f.warnings
        h = version.header
        policy = sender.source.on_conflict
        received = f.received_sha256
        async with self.db.transaction() as conn:
            # Decided again under the row lock: another sender may have stored a version of
            # this instance since the first look.
            for _ in range(2):
                row = await conn.fetchrow(q("lock_instance"), h.sop_instance_uid)
                facts = await _facts(conn, row, h.sop_instance_uid, received)
                decision = decide(facts, received, policy)
                if decision is Decision.DUPLICATE:
                    return await self._duplicate(conn, sender, h, row, received, f.received_size)
                if decision is Decision.CONFLICT:
                    raise _conflict(h)
                if decision is Decision.QUARANTINE:
                    conflict_id = await filing.quarantine(conn, version, sender.actor)
                    if conflict_id is None:  # the same version, quarantined a moment ago
                        return _result(Outcome.DUPLICATE, h, f.received_size)
                    await self._audit(
                        conn, sender, h, "quarantine", {**detail, "conflict": conflict_id}
                    )
                    note = (
                        f"SOP Instance {h.sop_instance_uid} is archived with other content;"
                        f" this version is quarantined as conflict {conflict_id}"
                    )
                    return _result(Outcome.QUARANTINED, h, version.size, (*warnings, note))
                series_fk = await filing.file_hierarchy(conn, version)
                if decision is Decision.REPLACE:
                    assert row is not None
                    kept = await filing.replace_instance(
                        conn, row["id"], version, series_fk, reason="replace", actor=sender.actor
                    )
                    await filing.enqueue_stored(conn, row["id"], version)
                    await self._audit(
                        conn,
                        sender,
                        h,
                        "replace",
                        {**detail, "previous_sha256": row["sha256"], "version": kept},
                    )
                    return _result(Outcome.REPLACED, h, version.size, warnings)
                inserted = await filing.insert_instance(conn, version, series_fk)
                if inserted is None:
                    continue  # another sender committed this UID since the lock query
                await filing.enqueue_stored(conn, inserted, version)
                await self._audit(conn, sender, h, "store", detail)
                return _result(Outcome.STORED, h, version.size, warnings)
        raise _conflict(h)  # pragma: no cover - two concurrent first versions, both lost

    async def _apply_rejection(
        self, note: RejectionNote, sender: Sender, h: InstanceHeader
    ) -> None:
        """An IOCM rejection note is filed: withdraw the instances it names (IHE RAD TF-3
        RAD-66).  After the note's own filing, which may have been one statement (the common
        path), in a transaction of its own; a resent note (a duplicate) is recorded here if an
        interruption left it unrecorded, and changes nothing otherwise.  A failure here fails
        the store, so the sender sends the note again."""
        async with self.db.transaction() as conn:
            done = await rejections.record_note(conn, note, sender.actor)
            if done is None:
                return
            await audit.record(
                conn,
                actor=sender.actor,
                origin=sender.origin,
                action="reject",
                patient_id=h.patient_id,
                issuer=h.issuer_of_patient_id,
                study_uid=h.study_uid,
                series_uid=h.series_uid,
                sop_uid=h.sop_instance_uid,
                detail={
                    "protocol": sender.protocol,
                    "source": sender.source.name,
                    "code": f"{note.code}^DCM",
                    "meaning": note.meaning,
                    "referenced": len(note.references),
                    "rejected": done.held,
                    "not_held": done.not_held,
                    "other_studies_ignored": done.ignored,
                },
            )
        log.info(
            "rejection note %s (%s): %d instances withdrawn, %d not held yet",
            note.sop_uid,
            note.meaning,
            done.held,
            done.not_held,
        )

    async def _duplicate(
        self,
        conn: asyncpg.Connection,
        sender: Sender,
        h: InstanceHeader,
        row: Any,
        received_sha256: str,
        size: int,
    ) -> IngestResult:
        """A version the archive holds: success, and nothing stored but the record of it.

        Every store attempt leaves its audit row, resends included (one statement on the
        connection the decision used).  An instance identical to the archived one from
        another source is recorded as received from that source, and when that source files
        it under another patient identity (its issuer), the two identities evidently hold the
        same images: a pending link between them is recorded for an administrator
        (``vna patients links --pending``).  The instance stays where it is filed.
        """
        detail: dict[str, Any] = {
            "protocol": sender.protocol,
            "source": sender.source.name,
            "size": size,
            "duplicate": True,
        }
        patient = (h.patient_id, h.issuer_of_patient_id)
        identical = received_sha256 in (row["received_sha256"], row["data_set_sha256"])
        if not identical or row["source"] == sender.source.name:
            await self._audit(conn, sender, h, "store", detail, patient=patient)
            return _result(Outcome.DUPLICATE, h, size)
        async with conn.transaction():
            filed = await filed_identity(conn, h.sop_instance_uid)
            detail["first_source"] = row["source"]
            if filed is not None and (filed.patient_id, filed.issuer) != patient:
                detail["sent_as"] = _identity_text(*patient)
                detail["filed_under"] = _identity_text(filed.patient_id, filed.issuer)
                link = await record_pending_link(
                    conn,
                    patient,
                    (filed.patient_id, filed.issuer),
                    sop_uid=h.sop_instance_uid,
                    study_uid=filed.study_uid,
                    source=sender.source.name,
                )
                if link is not None:
                    detail["pending_link"] = link
                patient = (filed.patient_id, filed.issuer)
            await self._audit(conn, sender, h, "store", detail, patient=patient)
        return _result(Outcome.DUPLICATE, h, size)

    async def _audit(
        self,
        conn: asyncpg.Connection,
        sender: Sender,
        h: InstanceHeader,
        action: str,
        detail: dict[str, Any],
        *,
        patient: tuple[str, str] | None = None,
    ) -> None:
        patient_id, issuer = patient or (h.patient_id, h.issuer_of_patient_id)
        await audit.record(
            conn,
            actor=sender.actor,
            origin=sender.origin,
            action=action,
            patient_id=patient_id,
            issuer=issuer,
            study_uid=h.study_uid,
            series_uid=h.series_uid,
            sop_uid=h.sop_instance_uid,
            detail=detail,
        )

    async def _audit_failure(self, sender: Sender, h: InstanceHeader | None, exc: VnaError) -> None:
        try:
            async with self.db.acquire() as conn:
                await audit.record(
                    conn,
                    actor=sender.actor,
                    origin=sender.origin,
                    action="store",
                    outcome="failure",
                    patient_id=h.patient_id if h else None,
                    issuer=h.issuer_of_patient_id if h else None,
                    study_uid=h.study_uid if h else None,
                    series_uid=h.series_uid if h else None,
                    sop_uid=h.sop_instance_uid if h else None,
                    detail={
                        "protocol": sender.protocol,
                        "source": sender.source.name,
                        "error": type(exc).__name__,
                        "reason": str(exc),
                    },
                )
        except VnaError as audit_exc:
            # The refusal itself already reached the sender; losing its audit record must at
            # least be loud.
            self.metrics.audit_failures.inc()
            log.error("could not audit a refused instance (%s): %s", exc, audit_exc)


async def _facts(
    conn: asyncpg.Connection, row: Any, sop_uid: str, data_set_sha256: str
) -> Existing | None:
    """What ``decide`` needs about the archived instance (None: there is none)."""
    if row is None:
        return None
    existing = Existing(
        received_sha256=row["received_sha256"], stored_sha256=row["data_set_sha256"]
    )
    if data_set_sha256 in (existing.received_sha256, existing.stored_sha256):
        return existing
    # Only on the rare path of other content: the versions the archive already holds.
    versions = await conn.fetch(q("known_versions"), sop_uid)
    known = {r["received_sha256"] for r in versions} | {
        r["data_set_sha256"] for r in versions if r["data_set_sha256"]
    }
    return Existing(existing.received_sha256, existing.stored_sha256, frozenset(known))


async def _corrections(conn: asyncpg.Connection, h: InstanceHeader) -> dict[str, str | None]:
    """The header values administrators' changes give an instance arriving now (empty: none):
    the patient its identity was merged into, or its study was moved to, and the study
    attributes a study correction set (Reason CORRECT, PS3.3 C.12.1.1.9.2)."""
    values: dict[str, str | None] = {}
    target = await _merge_target(conn, h.patient_id, h.issuer_of_patient_id)
    study = await conn.fetchrow(
        q("study_changes_applied"), h.study_uid, h.patient_id, h.issuer_of_patient_id
    )
    if target is None and study is not None and study["patient_id"] is not None:
        target = study
    if target is not None:
        values.update(
            {
                "PatientID": target["patient_id"],
                "IssuerOfPatientID": target["issuer"] or None,
                "PatientName": target["patient_name"],
                "PatientBirthDate": target["birth_date"],
                "PatientSex": target["sex"],
            }
        )
    if study is not None:
        for keyword in study["corrected"]:
            column = STUDY_ATTRIBUTES[keyword][1] if keyword in STUDY_ATTRIBUTES else None
            if column is None:
                continue
            value = study[column]
            if isinstance(value, dt.date):
                value = f"{value:%Y%m%d}"
            values[keyword] = value or ""
    return values


async def _merge_target(conn: asyncpg.Connection, patient_id: str, issuer: str) -> Any:
    """The patient this identity was merged into (following merges of merges), or None."""
    target = None
    seen = {(patient_id, issuer)}
    for _ in range(8):
        row = await conn.fetchrow(q("merged_into"), patient_id, issuer)
        if row is None or (row["patient_id"], row["issuer"]) in seen:
            break
        target = row
        patient_id, issuer = row["patient_id"], row["issuer"]
        seen.add((patient_id, issuer))
    return target


def _object_metadata(sender: Sender, ex: _Examined, obj: _Object) -> dict[str, str]:
    """What a catalogue rebuild needs beyond the object itself to file it again: the source,
    the time, and the data set as received when it is not the stored one (normalised).  Kept
    short: the filesystem store keeps it in the inode while it is small."""
    metadata = {
        "vna-source": sender.source.name,
        "vna-ingested-at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if ex.data_set_sha256 != obj.data_set_sha256:
        metadata["vna-received-sha256"] = ex.data_set_sha256
    return metadata


def _identity_text(patient_id: str, issuer: str) -> str:
    """A patient identity as the command line writes it (HL7 CX order: ID^^^ISSUER)."""
    return f"{patient_id}^^^{issuer}" if issuer else patient_id


def _result(
    outcome: Outcome, h: InstanceHeader, size: int, warnings: tuple[str, ...] = ()
) -> IngestResult:
    return IngestResult(
        outcome=outcome,
        sop_class_uid=h.sop_class_uid,
        sop_instance_uid=h.sop_instance_uid,
        study_uid=h.study_uid,
        series_uid=h.series_uid,
        size=size,
        warnings=warnings,
    )


def _conflict(h: InstanceHeader) -> InstanceConflict:
    return InstanceConflict(
        f"SOP Instance {h.sop_instance_uid} is already archived with different content"
    )
