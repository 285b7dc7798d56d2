"""Sending stored instances to a DIMSE storage SCP: the presentation contexts C-MOVE proposes
to its destination, and a C-STORE SCU for forwarding (``lifecycle.forwarding``).

Shared by the C-MOVE SCP (``vna.gateway.dimse.move_get``) and the forwarding jobs, so that a
forwarded instance goes out exactly as a C-MOVE would send it: the Part 10 file read with
pydicom, whose undecoded elements are written back byte for byte, in the stored transfer
syntax where the destination accepts it, else decompressed on the way (or always in the
syntax a destination is declared to receive).  Blocking (pynetdicom, the codecs): run it in
a thread.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE
from pynetdicom.presentation import PresentationContext, build_context

from vna.dicom.tcp import transport_handlers
from vna.dicom.transcode import CannotTranscode, TranscodeFailed, transcode_dataset

log = logging.getLogger(__name__)

#: Presentation context IDs are odd numbers 1-255 (PS3.8 9.3.2.2): 128 contexts at most.
MAX_CONTEXTS = 128
# Uncompressed little endian syntaxes pynetdicom can re-encode between without changing a value,
# offered in case the destination does not take the stored one.
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
UNCOMPRESSED = (*NATIVE, DeflatedExplicitVRLittleEndian)
#: Status of a C-STORE that got no response (association refused, aborted, timed out): not a
#: DIMSE status, the caller retries.
NO_RESPONSE = -1
#: Status of a C-STORE not attempted because the instance could not be made in an accepted
#: syntax (PS3.7 C.4: Failure, Processing failure).
PROCESSING_FAILURE = 0x0110


class Stored(Protocol):
    @property
    def sop_class_uid(self) -> str: ...

    @property
    def transfer_syntax(self) -> str: ...


def storage_contexts(
    instances: Iterable[Stored], transfer_syntax: str = ""
) -> list[PresentationContext]:
    """The presentation contexts to propose to a storage SCP for ``instances``.

    One context per stored SOP class and transfer syntax, with that syntax alone, so that
    where the destination accepts it the bytes go as stored (the destination chooses among
    the syntaxes of a context, PS3.8 9.3.3.2, and may prefer another).  For every SOP class,
    one more context offers the little endian syntaxes every storage SCP takes (PS3.5 10.1):
    where the destination accepts only those, a compressed instance is decompressed on the
    way (:func:`prepared`), and pynetdicom re-encodes between them without changing a value.
    ``transfer_syntax``: a destination that always receives that syntax (``[[destinations]]
    transfer_syntax``) is proposed that syntax alone, for every SOP class.
    """
    if transfer_syntax:
        classes = dict.fromkeys(i.sop_class_uid for i in instances)
        contexts = [build_context(sop_class, [transfer_syntax]) for sop_class in classes]
        return _bounded(contexts)
    contexts = []
    fallbacks = []
    for sop_class, syntax in dict.fromkeys((i.sop_class_uid, i.transfer_syntax) for i in instances):
        contexts.append(build_context(sop_class, [syntax]))
        if sop_class not in fallbacks:
            fallbacks.append(sop_class)
    contexts += [build_context(sop_class, list(NATIVE)) for sop_class in fallbacks]
    return _bounded(contexts)


def _bounded(contexts: list[PresentationContext]) -> list[PresentationContext]:
    if len(contexts) > MAX_CONTEXTS:
        log.warning(
            "%d presentation contexts needed; only the first %d fit in one association,"
            " the other instances will fail",
            len(contexts),
            MAX_CONTEXTS,
        )
        contexts = contexts[:MAX_CONTEXTS]
    return contexts


def accepted_syntaxes(contexts: Iterable[Any], sop_class: str) -> set[str]:
    """The transfer syntaxes accepted for ``sop_class`` among an association's accepted
    presentation contexts."""
    return {
        str(cx.transfer_syntax[0])
        for cx in contexts
        if str(cx.abstract_syntax) == sop_class and cx.transfer_syntax
    }


def prepared(dataset: Dataset, accepted: set[str], transfer_syntax: str = "") -> Dataset:
    """``dataset`` (read from its stored Part 10 file) ready to go over an association that
    accepted ``accepted`` for its SOP class: as stored where that syntax was accepted (or,
    uncompressed, where pynetdicom can re-encode it), else decompressed to Explicit (or
    Implicit) VR Little Endian; in ``transfer_syntax`` when the destination always receives
    that.  Decoding runs in the caller's thread (a pynetdicom or worker thread, never the
    event loop).  CannotTranscode / TranscodeFailed name the syntax and the reason."""
    stored = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    target = transfer_syntax
    if not target:
        if stored in accepted or (stored in UNCOMPRESSED and accepted & set(NATIVE)):
            return dataset
        target = next((ts for ts in NATIVE if ts in accepted), "")
        if not target:
            return dataset  # nothing acceptable: pynetdicom fails the sub-operation
    if target == stored:
        return dataset
    try:
        return transcode_dataset(dataset, target)
    except (CannotTranscode, TranscodeFailed) as exc:
        raise type(exc)(f"cannot send in transfer syntax {target}: {exc}") from exc


@dataclass(frozen=True)
class Outgoing:
    """One instance to send: its SOP class, stored transfer syntax and Part 10 bytes."""

    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    data: bytes


@dataclass(frozen=True)
class Sent:
    sop_uid: str
    #: The C-STORE response status (0x0000 success, 0xB... warning, else failure), or
    #: NO_RESPONSE when none came (the destination is unreachable or went away).
    status: int
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status == 0 or (self.status >> 12) == 0xB


def send(
    instances: Sequence[Outgoing],
    *,
    calling_ae: str,
    called_ae: str,
    host: str,
    port: int,
    timeout_seconds: float = 30.0,
    transfer_syntax: str = "",
) -> list[Sent]:
    """C-STORE each instance over one association; one outcome per instance, in order.
    ``transfer_syntax``: the syntax the destination always receives (empty: the stored one
    where it is accepted, else an uncompressed one)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_seconds
    assoc = ae.associate(
        host,
        port,
        contexts=storage_contexts(instances, transfer_syntax),
        ae_title=called_ae,
        evt_handlers=transport_handlers(),
    )
    if not assoc.is_established:
        reason = "association rejected" if assoc.is_rejected else "no association"
        return [
            Sent(i.sop_uid, NO_RESPONSE, f"{reason} ({called_ae} at {host}:{port})")
            for i in instances
        ]
    out: list[Sent] = []
    try:
        for item in instances:
            if not assoc.is_established:
                out.append(Sent(item.sop_uid, NO_RESPONSE, "the association ended"))
                continue
            read: Dataset = dcmread(io.BytesIO(item.data))
            accepted = accepted_syntaxes(assoc.accepted_contexts, item.sop_class_uid)
            try:
                dataset = prepared(read, accepted, transfer_syntax)
            except (CannotTranscode, TranscodeFailed) as exc:
                out.append(Sent(item.sop_uid, PROCESSING_FAILURE, str(exc)))
                continue
            try:
                status: Any = assoc.send_c_store(dataset)
            except ValueError as exc:  # no accepted presentation context for it
                out.append(Sent(item.sop_uid, 0x0122, str(exc)))  # SOP class not supported
                continue
            if status is None or "Status" not in status:
                out.append(Sent(item.sop_uid, NO_RESPONSE, "no C-STORE response"))
            else:
                comment = str(status.get("ErrorComment", "") or "")
                out.append(Sent(item.sop_uid, int(status.Status), comment))
    finally:
        if assoc.is_established:
            assoc.release()
    return out
