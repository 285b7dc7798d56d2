"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): send stored instances as C-STORE sub-operations.

The instances a request names are found by their unique keys in the catalogue; each is read
from the object store as the Part 10 file it was stored as and its data set sent in the stored
transfer syntax.  pydicom keeps the elements it read undecoded and writes them back byte for
byte, so the data set arrives as it was archived (header values and Pixel Data unchanged).

For C-MOVE the archive opens an association to the destination (declared in the configuration
by AE title, host and port) and proposes one presentation context per stored SOP class and
transfer syntax; for C-GET the sub-operations go back over the requester's association, on the
storage contexts it proposed with the SCP role (PS3.4 C.4.3.3).

pynetdicom drives the sub-operations and the pending and final responses; the handlers yield
what it asks for, one instance in memory at a time (and the start of the next, read ahead
while pynetdicom sends it).  A retrieve that touches an instance in an
offline tier is refused as a whole (A702, its restore queued) so that the requester retries it
later; an instance that cannot be read from the store counts as a failed sub-operation (its
UID goes into the Failed SOP Instance UID List) and the others go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from vna.dicom.sending import accepted_syntaxes, prepared, storage_contexts
from vna.dicom.tcp import transport_handlers
from vna.dicom.transcode import CannotTranscode, TranscodeFailed
from vna.errors import InvalidRequest, OfflineError, StorageError, VnaError
from vna.gateway.dimse.bridge import Gateway
from vna.gateway.dimse.identifier import retrieve_keys
from vna.gateway.status import CANCEL, PENDING, error_comment, retrieve_failure_status
from vna.retrieve import RetrieveKeys, StoredInstance
from vna.security.audit import RETRIEVE, Access, AuditTrail
from vna.security.query_scope import PatientScope, patient_scope

if TYPE_CHECKING:
    from vna.archive import Archive

log = logging.getLogger(__name__)

#: Number of Remaining/Completed/... Sub-operations are US (PS3.7 9.3.3): at most 65535.
MAX_SUB_OPERATIONS = 65535
#: Bytes of a stored object copied in memory before the copy spills to disk, and fetched from
#: the store per trip to the loop.
SPOOL_BYTES = 4 << 20

# A yield to pynetdicom's C-MOVE / C-GET service: a status and an optional data set, or (first,
# for C-MOVE) the destination, or the number of sub-operations.
_Yield = Any
# A stored object being read: its chunks, the first batch of them, and whether that was all.
_Opened = tuple[AsyncIterator[bytes], list[bytes], bool]


def handle_move(event: Any, gateway: Gateway) -> Iterator[_Yield]:
    """``evt.EVT_C_MOVE``: destination, number of sub-operations, then one yield per instance."""
    archive = gateway.archive
    calling_ae = event.assoc.requestor.ae_title.strip()
    destination = (event.move_destination or "").strip()
    address = archive.settings.move_destination(destination)
    if address is None:
        # PS3.4 C.4.2.1.5: Refused: Move Destination unknown (0xA801).
        log.warning("C-MOVE from %s to unknown destination %r refused", calling_ae, destination)
        yield None, None
        return
    host, port = address
    try:
        instances = _instances(event, gateway, "C-MOVE", destination)
    except VnaError as exc:
        # pynetdicom reports a handler's own failure status only once it has an association to
        # the destination, so a Verification association (every storage SCP echoes) stands in
        # for the sub-operations.  Were the destination unreachable, the answer is A801.
        yield host, port, {"contexts": [build_context(Verification)]}
        yield 1
        yield _failure(exc, "C-MOVE", calling_ae), None
        return
    log.info(
        "C-MOVE from %s: %d instances to %s at %s:%d",
        calling_ae,
        len(instances),
        destination,
        host,
        port,
    )
    # A destination declared to receive one syntax gets it; others the stored syntax where
    # they accept it, else an uncompressed one (vna.dicom.sending.prepared).
    forced = archive.settings.destination_syntax(destination)
    # What the destination accepted, seen when its association is accepted (pynetdicom
    # opens it between the yields below and does not hand it to this handler).
    accepted: list[Any] = []

    def on_accepted(accept_event: Any) -> None:
        accepted.extend(accept_event.assoc.accepted_contexts)

    # TCP options for the sub-operations' association (see vna.dicom.tcp): without
    # them each C-STORE waited on Nagle and delayed ACKs, not on the data.
    yield (
        host,
        port,
        {
            "contexts": sub_operation_contexts(instances, forced),
            "evt_handlers": [*transport_handlers(), (evt.EVT_ACCEPTED, on_accepted)],
        },
    )
    yield len(instances)
    yield from _sub_operations(event, gateway, instances, lambda: accepted, forced)


def handle_get(event: Any, gateway: Gateway) -> Iterator[_Yield]:
    """``evt.EVT_C_GET``: number of sub-operations, then one yield per instance."""
    calling_ae = event.assoc.requestor.ae_title.strip()
    try:
        instances = _instances(event, gateway, "C-GET")
    except VnaError as exc:
        yield 1
        yield _failure(exc, "C-GET", calling_ae), None
        return
    log.info("C-GET from %s: %d instances", calling_ae, len(instances))
    yield len(instances)
    # The sub-operations go over the requester's association, on the storage contexts it
    # proposed: a peer that accepts only uncompressed syntaxes gets decompressed instances.
    contexts = event.assoc.accepted_contexts
    yield from _sub_operations(event, gateway, instances, lambda: contexts)


def sub_operation_contexts(
    instances: list[StoredInstance], transfer_syntax: str = ""
) -> list[PresentationContext]:
    """The presentation contexts to propose to a C-MOVE destination (vna.dicom.sending, shared
    with forwarding)."""
    return storage_contexts(instances, transfer_syntax)


def _instances(
    event: Any, gateway: Gateway, operation: str, destination: str | None = None
) -> list[StoredInstance]:
    try:
        identifier = event.identifier
    except Exception as exc:  # pydicom raises many types on a malformed identifier
        raise InvalidRequest(f"cannot decode the identifier: {exc}") from exc
    keys = retrieve_keys(event.request.AffectedSOPClassUID, identifier)
    detail: dict[str, Any] = {"protocol": "dimse", "operation": operation, "level": keys.level}
    if destination:
        detail["destination"] = destination
    asker = Access(
        actor=event.assoc.requestor.ae_title.strip(),
        origin=event.assoc.requestor.address,
        action=RETRIEVE,
        detail=detail,
    )
    # A source's calling AE title retrieves within its patients ([[sources]] query_scope): a
    # PATIENT level retrieve without IssuerOfPatientID moves the caller's patient only.
    caller = gateway.archive.settings.source_for_ae(asker.actor)
    scope = patient_scope(caller, patient_id=keys.patient_id, issuer=keys.issuer_of_patient_id)
    return gateway.run(_online_instances(gateway.archive, keys, asker, scope))


async def _online_instances(
    archive: Archive,
    keys: RetrieveKeys,
    asker: Access | None = None,
    scope: PatientScope | None = None,
) -> list[StoredInstance]:
    instances = await find_instances(archive, keys, scope)
    # All or nothing, like WADO-RS: with an instance in an offline tier the whole retrieve is
    # refused (its restore queued) so that the requester retries it later as one.
    await archive.retriever.ensure_online(instances)
    if asker is not None:
        # Audited before the first sub-operation (PS3.15 A.5.3.7): no audit row, no retrieve.
        await AuditTrail(archive.db, archive.metrics).record(
            dataclasses.replace(
                asker,
                study_uids=[i.study_uid for i in instances],
                detail={**asker.detail, "instances": len(instances)},
            )
        )
    return instances


async def find_instances(
    archive: Archive, keys: RetrieveKeys, scope: PatientScope | None = None
) -> list[StoredInstance]:
    """The stored instances the keys name (of patients in ``scope``), in study, series and
    instance order."""
    # One more than a retrieve may carry, so that pynetdicom refuses an oversized one.
    return await archive.retriever.find_by_keys(keys, limit=MAX_SUB_OPERATIONS + 1, scope=scope)


def _sub_operations(
    event: Any,
    gateway: Gateway,
    instances: list[StoredInstance],
    contexts: Callable[[], Sequence[Any]],
    forced: str = "",
) -> Iterator[_Yield]:
    # While pynetdicom sends one instance, the loop opens the next and reads its first chunks,
    # so that the store's latency is not added to every sub-operation; one instance ahead at
    # most (up to SPOOL_BYTES of it).
    upcoming = _prefetch(gateway, instances, 0)
    try:
        for index, instance in enumerate(instances):
            # PS3.4 C.4.2.3.2: a C-CANCEL stops the sub-operations not yet started.
            if event.is_cancelled:
                yield CANCEL, None
                return
            opened, upcoming = upcoming, None
            assert opened is not None  # read ahead at the previous step
            dataset = _load(gateway, instance, opened)
            upcoming = _prefetch(gateway, instances, index + 1)
            yield PENDING, _sendable(instance, dataset, contexts(), forced)
    finally:
        # Cancelled, or the association ended: close what was opened ahead.
        if upcoming is not None:
            _discard(gateway, upcoming)


def _prefetch(
    gateway: Gateway, instances: list[StoredInstance], index: int
) -> Future[_Opened] | None:
    if index >= len(instances):
        return None
    try:
        return gateway.submit(_open(gateway.archive, instances[index]))
    except Exception as exc:  # the archive is stopping: the sub-operation fails in _load
        failed: Future[_Opened] = Future()
        failed.set_exception(exc)
        return failed


def _discard(gateway: Gateway, opened: Future[_Opened]) -> None:
    """Close an instance read ahead that will not be sent, without waiting for it: this may
    run wherever the generator is finalised, the loop's thread included."""

    def close(future: Future[_Opened]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # nothing left open
        chunks, _batch, done = future.result()
        if not done:
            closing = _aclose(chunks)
            try:
                asyncio.run_coroutine_threadsafe(closing, gateway.loop)
            except RuntimeError:  # the loop is closed: the archive has stopped
                closing.close()

    opened.add_done_callback(close)


def _load(gateway: Gateway, instance: StoredInstance, opened: Future[_Opened]) -> Dataset:
    """The stored instance's data set, read from a copy of its Part 10 file.

    Nothing of it has been sent while it is copied, so damage found past the read-ahead of
    ``open`` (recorded by the retriever) is healed here: the instance is opened again, which
    goes to a replica, and copied again.
    """
    for attempt in (1, 2):
        try:
            with _copy(gateway, opened) as f:
                return dcmread(f)
        except OfflineError as exc:
            # Gone offline since the check before the sub-operations (a restored copy
            # expired): the retriever has queued its restore; this sub-operation fails, the
            # others go on.
            log.warning("stored instance %s cannot be sent now: %s", instance.sop_uid, exc)
            return _unsendable(instance)
        except StorageError as exc:
            if attempt == 1 and opened.exception() is None:
                log.warning("stored instance %s: %s; reading it again", instance.sop_uid, exc)
                opened = gateway.submit(_open(gateway.archive, instance))
                continue
            log.warning("stored instance %s cannot be sent: %s", instance.sop_uid, exc)
            return _unsendable(instance)
        except Exception as exc:
            log.warning("stored instance %s cannot be sent: %s", instance.sop_uid, exc)
            return _unsendable(instance)
    return _unsendable(instance)


def _copy(gateway: Gateway, opened: Future[_Opened]) -> tempfile.SpooledTemporaryFile[bytes]:
    """A copy of the object, rewound: in memory up to ``SPOOL_BYTES``, beyond that in an
    anonymous file on the data volume (so that a large instance never sits whole in memory
    twice).

    The loop hands over up to ``SPOOL_BYTES`` of chunks per trip between the threads (a whole
    typical instance in the trip that opened it) and this thread writes them: a trip per
    chunk, each a wake-up of two threads, had cost a C-MOVE more than the bytes did.
    """
    spool: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(
        max_size=SPOOL_BYTES, mode="w+b", dir=str(gateway.archive.incoming)
    )
    try:
        chunks, batch, done = opened.result()
        try:
            while True:
                for chunk in batch:
                    spool.write(chunk)
                if done:
                    break
                batch, done = gateway.run(_next_batch(chunks))
        finally:
            if not done:  # an exhausted stream has closed itself
                gateway.run(_aclose(chunks))
    except OSError as exc:
        spool.close()
        raise StorageError(f"cannot copy the stored object: {exc.strerror}") from exc
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


async def _open(archive: Archive, instance: StoredInstance) -> _Opened:
    chunks = await archive.retriever.open(instance)
    try:
        batch, done = await _next_batch(chunks)
    except BaseException:
        await _aclose(chunks)
        raise
    return chunks, batch, done


async def _next_batch(chunks: AsyncIterator[bytes]) -> tuple[list[bytes], bool]:
    """The next chunks, until they reach ``SPOOL_BYTES``, and whether they were the last."""
    batch: list[bytes] = []
    size = 0
    while size < SPOOL_BYTES:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return batch, True
        batch.append(chunk)
        size += len(chunk)
    return batch, False


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


def _sendable(
    instance: StoredInstance, dataset: Dataset, contexts: Sequence[Any], forced: str
) -> Dataset:
    """The data set as the peer takes it: decompressed (in this pynetdicom thread) when the
    peer accepted only uncompressed syntaxes for its SOP class; a failed sub-operation, its
    reason naming the syntax logged, when it cannot be made."""
    if "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
        return dataset  # already the stand-in of an unreadable instance
    accepted = accepted_syntaxes(contexts, instance.sop_class_uid)
    try:
        return prepared(dataset, accepted, forced)
    except (CannotTranscode, TranscodeFailed) as exc:
        log.warning("stored instance %s cannot be sent: %s", instance.sop_uid, exc)
        return _unsendable(instance)


def _unsendable(instance: StoredInstance) -> Dataset:
    """A stand-in for an instance that cannot be read: pynetdicom cannot send it (it has no
    transfer syntax), so it counts the sub-operation as failed and lists the instance in
    Failed SOP Instance UID List (PS3.4 C.4.2.1.4.2, C.4.3.1.4.2)."""
    ds = Dataset()
    ds.SOPClassUID = instance.sop_class_uid
    ds.SOPInstanceUID = instance.sop_uid
    return ds


def _failure(exc: VnaError, what: str, calling_ae: str) -> Dataset:
    status = retrieve_failure_status(exc)
    log.warning("%s from %s refused with 0x%04X: %s", what, calling_ae, status, exc)
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = error_comment(str(exc))
    return ds
