"""Ingest one DICOM instance: parse, hash, dedup, write the object, commit the catalogue.

The order is the archive's durability promise: the object is durable before the catalogue
sees it, and the caller is answered only after the catalogue commit.  A crash in between
leaves an orphan object (content-addressed, so harmless and adoptable), never a catalogue row
without its object.  Follow-up work (compression, replication) is queued in the same
transaction as the instance row (an outbox), so it cannot be lost either.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.config import IngestSettings, SourceSettings
from vna.dicom.parse import (
    InstanceHeader,
    data_set_offset,
    dicom_json,
    extract_header,
    read_dataset,
)
from vna.errors import (
    InstanceConflict,
    InstanceRef,
    InstanceTooLarge,
    PatientMismatch,
    StudyMismatch,
    VnaError,
)
from vna.ingest.decision import Decision, Existing, decide
from vna.metrics import Metrics
from vna.storage.base import ObjectStore, content_key

log = logging.getLogger(__name__)
_HASH_CHUNK = 1 << 20


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
    #: Of the whole Part 10 file: the object's content address.
    sha256: str
    #: Of the data set alone: what a resend is recognised by.
    data_set_sha256: str
    size: int


class Ingester:
    def __init__(
        self, db: Database, store: ObjectStore, settings: IngestSettings, metrics: Metrics
    ) -> None:
        self.db = db
        self.store = store
        self.settings = settings
        self.metrics = metrics
        # Bounds the instances in flight (threads parsing, catalogue connections) so a burst of
        # senders queues here instead of exhausting the pool or memory.
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def ingest_file(
        self,
        path: Path,
        sender: Sender,
        *,
        consume: bool = True,
        expected_study_uid: str | None = None,
    ) -> IngestResult:
        """Ingest the Part 10 file at ``path``.

        With ``consume`` the pipeline takes the file over: it is moved into the store or removed,
        whatever the outcome.  ``expected_study_uid`` refuses an instance of another study
        (STOW-RS to ``/studies/{study}``, PS3.18 10.5.1).  Raises a VnaError subclass when the
        instance is refused; its ``instance`` attribute names it when the header was readable.
        """
        started = time.perf_counter()
        examined: _Examined | None = None
        try:
            async with self._slots:
                examined = await asyncio.to_thread(self._examine, path)
                if expected_study_uid and examined.header.study_uid != expected_study_uid:
                    raise StudyMismatch(
                        f"instance belongs to study {examined.header.study_uid},"
                        f" not {expected_study_uid} named in the request"
                    )
                result = await self._store(path, examined, sender, consume)
        except VnaError as exc:
            if examined is not None and exc.instance is None:
                exc.instance = InstanceRef(
                    examined.header.sop_class_uid, examined.header.sop_instance_uid
                )
            self.metrics.instance_failures.labels(sender.protocol, type(exc).__name__).inc()
            await self._audit_failure(sender, examined, exc)
            raise
        finally:
            if consume:
                path.unlink(missing_ok=True)  # noqa: ASYNC240 - one metadata syscall
        self.metrics.ingest_seconds.observe(time.perf_counter() - started)
        if result.outcome is Outcome.STORED:
            self.metrics.instances_stored.labels(sender.protocol, sender.source.name).inc()
            self.metrics.bytes_stored.labels(sender.protocol).inc(result.size)
        else:
            self.metrics.instances_duplicate.labels(sender.protocol, sender.source.name).inc()
        return result

    # --- steps ----------------------------------------------------------------------------

    def _examine(self, path: Path) -> _Examined:
        """Blocking part, run in a worker thread: size check, header parse, hashes.

        hashlib releases the GIL on large buffers, so hashing here runs beside the event loop
        on another core.
        """
        size = path.stat().st_size
        if size > self.settings.max_instance_bytes:
            raise InstanceTooLarge(
                f"instance of {size} bytes exceeds the limit of"
                f" {self.settings.max_instance_bytes} bytes (ingest.max_instance_bytes)"
            )
        ds = read_dataset(path)
        header = extract_header(ds)
        whole, data_set = hashlib.sha256(), hashlib.sha256()
        with open(path, "rb") as f:
            start = data_set_offset(f)
            f.seek(0)
            head = f.read(start)
            whole.update(head)
            while chunk := f.read(_HASH_CHUNK):
                whole.update(chunk)
                data_set.update(chunk)
        return _Examined(
            header=header,
            metadata=dicom_json(ds),
            sha256=whole.hexdigest(),
            data_set_sha256=data_set.hexdigest(),
            size=size,
        )

    async def _store(
        self, path: Path, ex: _Examined, sender: Sender, consume: bool
    ) -> IngestResult:
        h = ex.header
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(q("find_instance"), h.sop_instance_uid)
        decision = decide(_existing(row), ex.data_set_sha256)
        if decision is Decision.DUPLICATE:
            return _result(Outcome.DUPLICATE, ex)
        if decision is Decision.CONFLICT:
            raise _conflict(h)

        key = content_key(ex.sha256)
        await self.store.put_file(
            key,
            path,
            sha256=ex.sha256,
            consume=consume,
            # Enough to re-index the object if the catalogue is ever lost (catalogue rebuild).
            metadata={
                "vna-source": sender.source.name,
                "vna-received-sha256": ex.data_set_sha256,
                "vna-ingested-at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )

        issuer = _issuer(h, sender.source)
        async with self.db.transaction() as conn:
            patient_fk = await conn.fetchval(
                q("upsert_patient"),
                h.patient_id,
                issuer,
                h.patient_name,
                h.patient_birth_date,
                h.patient_sex,
            )
            study = await conn.fetchrow(
                q("upsert_study"),
                h.study_uid,
                patient_fk,
                h.study_date,
                h.study_time,
                h.accession_number,
                h.study_id,
                h.study_description,
                h.referring_physician,
                sender.source.name,
            )
            if study["patient_fk"] != patient_fk:
                owner = await conn.fetchrow(
                    "SELECT patient_id, issuer FROM patients WHERE id = $1", study["patient_fk"]
                )
                raise PatientMismatch(
                    f"study {h.study_uid} is archived under patient"
                    f" {_who(owner['patient_id'], owner['issuer'])}, not"
                    f" {_who(h.patient_id, issuer)}"
                )
            series = await conn.fetchrow(
                q("upsert_series"),
                h.series_uid,
                study["id"],
                h.modality,
                h.series_number,
                h.series_description,
                h.body_part,
            )
            if series["study_fk"] != study["id"]:
                raise InstanceConflict(
                    f"series {h.series_uid} belongs to another study than {h.study_uid}"
                )
            inserted = await conn.fetchval(
                q("insert_instance"),
                h.sop_instance_uid,
                series["id"],
                h.sop_class_uid,
                h.instance_number,
                h.transfer_syntax,
                h.rows,
                h.columns,
                h.number_of_frames,
                h.has_pixel_data,
                ex.sha256,
                ex.data_set_sha256,
                ex.size,
                key,
                ex.size,
                sender.source.name,
                ex.metadata,
            )
            if inserted is None:
                # Another sender committed the same SOP Instance UID since our lookup.
                row = await conn.fetchrow(q("find_instance"), h.sop_instance_uid)
                if decide(_existing(row), ex.data_set_sha256) is Decision.DUPLICATE:
                    return _result(Outcome.DUPLICATE, ex)
                raise _conflict(h)
            await conn.execute(
                q("enqueue_job"),
                "instance-stored",
                {"instance_id": inserted, "object_key": key, "sop_uid": h.sop_instance_uid},
            )
            await conn.execute(
                q("record_audit"),
                sender.actor,
                sender.origin,
                "store",
                "success",
                h.patient_id,
                issuer,
                h.study_uid,
                h.series_uid,
                h.sop_instance_uid,
                {"protocol": sender.protocol, "source": sender.source.name, "size": ex.size},
            )
        return _result(Outcome.STORED, ex)

    async def _audit_failure(
        self, sender: Sender, examined: _Examined | None, exc: VnaError
    ) -> None:
        h = examined.header if examined else None
        try:
            async with self.db.acquire() as conn:
                await conn.execute(
                    q("record_audit"),
                    sender.actor,
                    sender.origin,
                    "store",
                    "failure",
                    h.patient_id if h else None,
                    None,
                    h.study_uid if h else None,
                    h.series_uid if h else None,
                    h.sop_instance_uid if h else None,
                    {
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


def _existing(row: Any) -> Existing | None:
    if row is None:
        return None
    return Existing(received_sha256=row["received_sha256"])


def _result(outcome: Outcome, ex: _Examined) -> IngestResult:
    h = ex.header
    return IngestResult(
        outcome=outcome,
        sop_class_uid=h.sop_class_uid,
        sop_instance_uid=h.sop_instance_uid,
        study_uid=h.study_uid,
        series_uid=h.series_uid,
        size=ex.size,
    )


def _conflict(h: InstanceHeader) -> InstanceConflict:
    return InstanceConflict(
        f"SOP Instance {h.sop_instance_uid} is already archived with different content"
    )


def _issuer(h: InstanceHeader, source: SourceSettings) -> str:
    """The issuer the catalogue files the patient under (identity is PatientID + issuer)."""
    if source.issuer_of_patient_id and not (source.trust_issuer and h.issuer_of_patient_id):
        return source.issuer_of_patient_id
    return h.issuer_of_patient_id


def _who(patient_id: str, issuer: str) -> str:
    return f"{patient_id!r} (issuer {issuer!r})" if issuer else repr(patient_id)
