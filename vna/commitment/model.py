"""The Storage Commitment request and report as data sets (PS3.4 J.3.2, J.3.3; the
attributes are those of the Storage Commitment module, PS3.3 C.14.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from vna.dicom.uids import is_valid_uid
from vna.errors import (
    InvalidRequest,
    MissingAttribute,
    NotFound,
    RequestTooLarge,
    UnsupportedAction,
)

#: Storage Commitment Push Model SOP Class and its well-known SOP Instance (PS3.4 J.3.5,
#: PS3.6 Annex A): every request and report names this instance.
PUSH_MODEL = "1.2.840.10008.1.20.1"
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
#: Action Type ID of "Request Storage Commitment" (PS3.4 J.3.2.1, Table J.3-1).
REQUEST_ACTION = 1
#: Event Type IDs of the report (PS3.4 J.3.3.1, Table J.3-2): every instance committed, or
#: some failed.
ALL_COMMITTED = 1
SOME_FAILED = 2

#: References in one request the archive handles.  Each costs a full read of its object (the
#: SHA-256 check) and one item in the report; 10,000 is a very large study (a whole-body CT
#: with several reconstructions), so a PACS never needs more per request.  Larger requests
#: are refused with 0x0213 (resource limitation) before any work is done.
MAX_REFERENCES = 10_000

# Failure Reason (0008,1197) values (PS3.3 C.14.1.1).
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT = 0x0112
RESOURCE_LIMITATION = 0x0213
SOP_CLASS_NOT_SUPPORTED = 0x0122
CLASS_INSTANCE_CONFLICT = 0x0119
DUPLICATE_TRANSACTION_UID = 0x0131


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Request:
    transaction_uid: str
    references: tuple[Reference, ...]


@dataclass(frozen=True)
class Failure:
    reference: Reference
    reason: int
    #: For the log and `vna commitments list`, never sent (the report has no place for it).
    detail: str = ""


@dataclass
class Outcome:
    """Each reference of a request, committed or failed, in request order."""

    committed: list[Reference] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def event_type(self) -> int:
        return SOME_FAILED if self.failed else ALL_COMMITTED

    def failed_rows(self) -> list[dict[str, object]]:
        """The failures as the catalogue records them."""
        return [
            {
                "class": f.reference.sop_class_uid,
                "instance": f.reference.sop_instance_uid,
                "reason": f"{f.reason:04X}",
                "detail": f.detail,
            }
            for f in self.failed
        ]


def check_addressing(action_type: int, requested_class: str, requested_instance: str) -> None:
    """The N-ACTION must ask the well-known instance for action 1 (PS3.4 J.3.2.1)."""
    if action_type != REQUEST_ACTION:
        raise UnsupportedAction(f"Action Type ID {action_type}: only 1 (request commitment)")
    if requested_class != PUSH_MODEL:
        raise InvalidRequest(f"Requested SOP Class {requested_class!r} is not Storage Commitment")
    if requested_instance != WELL_KNOWN_INSTANCE:
        raise NotFound(
            f"Requested SOP Instance {requested_instance!r} is not the well-known instance"
            f" {WELL_KNOWN_INSTANCE}"
        )


def parse_request(info: Dataset | None) -> Request:
    """The Action Information of a Storage Commitment request (PS3.4 Table J.3-1)."""
    if info is None:
        raise MissingAttribute("no Action Information (Transaction UID, Referenced SOP Sequence)")
    transaction_uid = str(info.get("TransactionUID", "") or "").strip()
    if "TransactionUID" not in info:
        raise MissingAttribute("Transaction UID (0008,1195) is missing")
    if not is_valid_uid(transaction_uid):
        raise InvalidRequest(f"Transaction UID is not a valid UID: {transaction_uid[:64]!r}")
    if "ReferencedSOPSequence" not in info:
        raise MissingAttribute("Referenced SOP Sequence (0008,1199) is missing")
    items = info.ReferencedSOPSequence
    if len(items) == 0:
        raise MissingAttribute("Referenced SOP Sequence (0008,1199) is empty")
    if len(items) > MAX_REFERENCES:
        raise RequestTooLarge(f"{len(items)} references; at most {MAX_REFERENCES} per request")
    refs = []
    for n, item in enumerate(items, 1):
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not sop_class or not sop_instance:
            raise MissingAttribute(f"item {n} of Referenced SOP Sequence lacks a UID")
        if not is_valid_uid(sop_class) or not is_valid_uid(sop_instance):
            raise InvalidRequest(f"item {n} of Referenced SOP Sequence has an invalid UID")
        refs.append(Reference(sop_class, sop_instance))
    return Request(transaction_uid, tuple(refs))


def event_information(transaction_uid: str, outcome: Outcome) -> Dataset:
    """The Event Information of the report (PS3.4 Table J.3-2): Referenced SOP Sequence for
    what is committed (present only when something is, type 1C in event 2) and Failed SOP
    Sequence with a Failure Reason for the rest."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if outcome.committed or not outcome.failed:
        ds.ReferencedSOPSequence = Sequence([_item(r) for r in outcome.committed])
    if outcome.failed:
        failed = []
        for f in outcome.failed:
            item = _item(f.reference)
            item.FailureReason = f.reason
            failed.append(item)
        ds.FailedSOPSequence = Sequence(failed)
    return ds


def _item(ref: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item
