"""HL7 v2 ADT events applied to the archive's patients: the engine side of the HL7 listener
(``vna.gateway.hl7``), which parses a message into the requests below and answers with the
:class:`Outcome` this module returns.

Every request goes through the same engine functions as ``vna patients update|merge|unlink``
and ``/admin`` (``vna.admin.patients``): objects rewritten with Original Attributes Sequence,
undoable, audited.  A message is applied at most once per sending facility and control ID
(MSH-10, HL7 v2.5.1 2.15.9.10): a retransmission is answered as the first receipt was, and
logged (``hl7_messages``, ``vna hl7 log``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vna.admin import patients
from vna.admin.patients import Identity
from vna.catalog import audit, hl7_messages
from vna.errors import NotFound, VnaError

if TYPE_CHECKING:
    from vna.archive import Archive

#: Audit action of every message received.
AUDIT_ACTION = "hl7-message"

# HL7 v2.5.1 table 0357 (message error condition codes), the ones the archive answers with.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
DUPLICATE_KEY_IDENTIFIER = "205"
APPLICATION_INTERNAL_ERROR = "207"

ERROR_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    DUPLICATE_KEY_IDENTIFIER: "Duplicate key identifier",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}


# --- requests: what a message asks of the archive -------------------------------------------


@dataclass(frozen=True)
class UpdateDemographics:
    """A01, A04, A08: the patient's name, birth date and sex as the HIS now has them
    (``values``: DICOM keywords; an empty value clears the attribute), and the identifiers
    the HIS knows the same person by under other assigning authorities (``other_ids``)."""

    patient: Identity
    values: Mapping[str, str]
    other_ids: tuple[Identity, ...] = ()


@dataclass(frozen=True)
class Merge:
    """A40: every study of ``prior`` (MRG-1) belongs to ``survivor`` (PID-3)."""

    survivor: Identity
    prior: Identity


@dataclass(frozen=True)
class ChangeIdentifier:
    """A47: the patient known as ``prior`` (MRG-1) is ``new`` (PID-3) from now on."""

    new: Identity
    prior: Identity


@dataclass(frozen=True)
class Unlink:
    """A37: two identities the HIS had linked are different people."""

    a: Identity
    b: Identity


AdtRequest = UpdateDemographics | Merge | ChangeIdentifier | Unlink


@dataclass(frozen=True)
class Envelope:
    """What MSH says about a message, and where it came from."""

    sending_facility: str
    control_id: str
    message_type: str
    peer: str = ""
    text: str = ""


@dataclass(frozen=True)
class Refusal:
    """A message the archive does not act on: AR (not accepted: sender, type, version) or AE
    (accepted but in error: a missing segment or field), with the HL7 error code (table 0357),
    the location (``PID^1^3``: segment, sequence, field) and a sentence for the sender."""

    ack_code: str
    error_code: str
    text: str
    location: str = ""


@dataclass(frozen=True)
class Outcome:
    """The answer to one message (the ACK) and what it did."""

    ack_code: str
    outcome: str
    text: str
    error_code: str = ""
    location: str = ""
    change_ids: tuple[int, ...] = ()
    duplicate: bool = False
    log_id: int | None = None


@dataclass
class _Applied:
    outcome: str = "unchanged"
    notes: list[str] = field(default_factory=list)
    change_ids: list[int] = field(default_factory=list)
    patient: str | None = None


# --- receiving ----------------------------------------------------------------------------


async def receive(
    archive: Archive,
    envelope: Envelope,
    decision: Sequence[AdtRequest] | Refusal,
    *,
    source: str | None,
) -> Outcome:
    """Apply (or refuse) one message at most once, log it and audit it; the ACK is built from
    the returned outcome.  ``decision`` is what the message asks, or why it is refused."""
    actor = f"hl7:{envelope.sending_facility or '?'}"
    async with archive.db.acquire() as conn:
        log_id = await hl7_messages.claim(
            conn,
            facility=envelope.sending_facility,
            control_id=envelope.control_id,
            peer=envelope.peer,
            message_type=envelope.message_type,
            message=envelope.text,
        )
        if log_id is None:
            earlier = await hl7_messages.count_receipt(
                conn, envelope.sending_facility, envelope.control_id
            )
    if log_id is None:
        return await _answer_again(archive, envelope, earlier, actor)
    if isinstance(decision, Refusal):
        outcome = Outcome(
            ack_code=decision.ack_code,
            outcome="refused" if decision.ack_code == "AR" else "error",
            text=decision.text,
            error_code=decision.error_code,
            location=decision.location,
            log_id=log_id,
        )
        await _finish(archive, envelope, outcome, actor, source=source, patient=None)
        return outcome
    applied = _Applied()
    try:
        for request in decision:
            await _apply(archive, request, applied, actor=actor, origin=envelope.peer)
    except VnaError as exc:
        # The engine's refusal (a merge into an identity that exists, an instance changed
        # meanwhile): nothing of this request was applied; earlier requests of the message
        # (several PID/MRG groups) stay applied and are listed.
        code = (
            DUPLICATE_KEY_IDENTIFIER if "already exists" in str(exc) else APPLICATION_INTERNAL_ERROR
        )
        done = f" (done before it: {'; '.join(applied.notes)})" if applied.notes else ""
        outcome = Outcome(
            ack_code="AE",
            outcome="error",
            text=f"{exc}{done}",
            error_code=code,
            change_ids=tuple(applied.change_ids),
            log_id=log_id,
        )
    except BaseException:
        # Not answered: leave the row to be taken again by a retransmission.
        await _finish_row(archive, log_id, Outcome("AE", "error", "interrupted"), None, None)
        raise
    else:
        outcome = Outcome(
            ack_code="AA",
            outcome=applied.outcome,
            text="; ".join(applied.notes),
            change_ids=tuple(applied.change_ids),
            log_id=log_id,
        )
    await _finish(archive, envelope, outcome, actor, source=source, patient=applied.patient)
    return outcome


async def record_unreadable(archive: Archive, *, peer: str, text: str, refusal: Refusal) -> int:
    """Log and audit a message too broken to name its sender or control ID."""
    async with archive.db.transaction() as conn:
        log_id = await hl7_messages.insert_unkeyed(conn, peer=peer, message_type="", message=text)
        await hl7_messages.finish(
            conn,
            log_id,
            ack_code=refusal.ack_code,
            outcome="malformed",
            detail=refusal.text,
            change_ids=(),
            source=None,
            patient=None,
        )
        await audit.record_security_event(
            conn,
            actor="hl7:?",
            origin=peer,
            action=AUDIT_ACTION,
            outcome="failure",
            detail={
                "log": log_id,
                "ack": refusal.ack_code,
                "outcome": "malformed",
                "text": refusal.text,
            },
        )
    return log_id


async def list_log(
    archive: Archive, *, limit: int = 100, outcome: str | None = None
) -> list[dict[str, Any]]:
    async with archive.db.acquire() as conn:
        return await hl7_messages.list_messages(conn, limit=limit, outcome=outcome)


async def show_logged(archive: Archive, message_id: int) -> dict[str, Any]:
    async with archive.db.acquire() as conn:
        found = await hl7_messages.show_message(conn, message_id)
    if found is None:
        raise NotFound(f"no HL7 message {message_id} in the log")
    return found


# --- applying -----------------------------------------------------------------------------


async def _apply(
    archive: Archive, request: AdtRequest, applied: _Applied, *, actor: str, origin: str
) -> None:
    if isinstance(request, UpdateDemographics):
        await _update(archive, request, applied, actor=actor, origin=origin)
    elif isinstance(request, Merge):
        await _merge(archive, request, applied, actor=actor, origin=origin)
    elif isinstance(request, ChangeIdentifier):
        applied.patient = applied.patient or str(request.prior)
        if await _find(archive, request.prior) is None:
            _unknown(applied, request.prior)
            return
        change = await patients.update_patient(
            archive,
            request.prior,
            {"PatientID": request.new.patient_id, "IssuerOfPatientID": request.new.issuer},
            actor=actor,
            origin=origin,
        )
        _changed(applied, change, f"{request.prior} is now {request.new} (change {change})")
    else:
        await _unlink(archive, request, applied, actor=actor, origin=origin)


async def _update(
    archive: Archive, request: UpdateDemographics, applied: _Applied, *, actor: str, origin: str
) -> None:
    applied.patient = applied.patient or str(request.patient)
    current = await _find(archive, request.patient)
    if current is None:
        _unknown(applied, request.patient)
        return
    # Only what differs: an A08 repeating what the archive holds (most of them) must not
    # rewrite every object of the patient.
    column = {"PatientName": "patient_name", "PatientBirthDate": "birth_date", "PatientSex": "sex"}
    values = {k: v for k, v in request.values.items() if (current[column[k]] or "") != v}
    if values:
        change = await patients.update_patient(
            archive, request.patient, values, actor=actor, origin=origin
        )
        _changed(
            applied, change, f"{request.patient}: {', '.join(sorted(values))} (change {change})"
        )
    for other in request.other_ids:
        if other == request.patient or other in current["linked_ids"]:
            continue
        if await _find(archive, other) is None:
            continue  # an identifier the archive holds no images under: nothing to link
        link_id = await patients.link(
            archive.db,
            request.patient,
            other,
            reason="HL7 PID-3: another identifier of the same patient",
            actor=actor,
            origin=origin,
        )
        applied.outcome = "applied"
        applied.notes.append(f"{request.patient} linked to {other} (link {link_id})")
    if applied.outcome == "unchanged" and not applied.notes:
        applied.notes.append(f"{request.patient}: already up to date")


async def _merge(
    archive: Archive, request: Merge, applied: _Applied, *, actor: str, origin: str
) -> None:
    applied.patient = applied.patient or str(request.survivor)
    if await _find(archive, request.prior) is None:
        _unknown(applied, request.prior)
        return
    if await _find(archive, request.survivor) is None:
        # The survivor has no images here: the prior patient's studies simply take its
        # identifier (what an A47 would do), rather than refusing the merge.
        change = await patients.update_patient(
            archive,
            request.prior,
            {
                "PatientID": request.survivor.patient_id,
                "IssuerOfPatientID": request.survivor.issuer,
            },
            actor=actor,
            origin=origin,
        )
        _changed(applied, change, f"{request.prior} is now {request.survivor} (change {change})")
        return
    change = await patients.merge_patients(
        archive, request.prior, request.survivor, actor=actor, origin=origin
    )
    _changed(applied, change, f"{request.prior} merged into {request.survivor} (change {change})")


async def _unlink(
    archive: Archive, request: Unlink, applied: _Applied, *, actor: str, origin: str
) -> None:
    applied.patient = applied.patient or str(request.a)
    links = await patients.links_of(archive.db, request.a)
    removed = False
    for link in links["links"]:
        ends = {
            Identity(link["patient_id_a"], link["issuer_a"]),
            Identity(link["patient_id_b"], link["issuer_b"]),
        }
        if ends == {request.a, request.b}:
            await patients.unlink(archive.db, link["id"], actor=actor, origin=origin)
            applied.outcome = "applied"
            applied.notes.append(f"{request.a} and {request.b} unlinked (link {link['id']})")
            removed = True
    if not removed:
        applied.notes.append(f"{request.a} and {request.b} were not linked")


async def _find(archive: Archive, identity: Identity) -> dict[str, Any] | None:
    """The patient's row (with ``linked_ids``), or None when the archive holds no images of it."""
    for row in await patients.find_patients(archive.db, identity, limit=10):
        if row["patient_id"] == identity.patient_id and row["issuer"] == identity.issuer:
            row["linked_ids"] = {Identity.parse(i) for i in row["linked"]}
            return row
    return None


def _unknown(applied: _Applied, identity: Identity) -> None:
    # Acknowledged (the HIS must not retry forever) and recorded: the archive holds no
    # images of this patient, so there is nothing to correct.
    if applied.outcome == "unchanged":
        applied.outcome = "unknown-patient"
    applied.notes.append(f"patient {identity} is not in the archive: nothing to change")


def _changed(applied: _Applied, change: int, note: str) -> None:
    applied.outcome = "applied"
    applied.change_ids.append(change)
    applied.notes.append(note)


async def _answer_again(
    archive: Archive, envelope: Envelope, earlier: hl7_messages.Earlier, actor: str
) -> Outcome:
    if earlier.state == "processing":
        outcome = Outcome(
            ack_code="AE",
            outcome="error",
            text=f"message {envelope.control_id} is being processed; send it again later",
            error_code=APPLICATION_INTERNAL_ERROR,
            duplicate=True,
            log_id=earlier.id,
        )
    else:
        outcome = Outcome(
            ack_code=earlier.ack_code or "AA",
            outcome=earlier.outcome or "applied",
            text=f"already received: {earlier.detail}" if earlier.detail else "already received",
            change_ids=earlier.change_ids,
            duplicate=True,
            log_id=earlier.id,
        )
    async with archive.db.transaction() as conn:
        await audit.record(
            conn,
            actor=actor,
            origin=envelope.peer,
            action=AUDIT_ACTION,
            outcome="success",
            detail=_audit_detail(envelope, outcome),
        )
    return outcome


async def _finish(
    archive: Archive,
    envelope: Envelope,
    outcome: Outcome,
    actor: str,
    *,
    source: str | None,
    patient: str | None,
) -> None:
    assert outcome.log_id is not None
    async with archive.db.transaction() as conn:
        await hl7_messages.finish(
            conn,
            outcome.log_id,
            ack_code=outcome.ack_code,
            outcome=outcome.outcome,
            detail=outcome.text,
            change_ids=outcome.change_ids,
            source=source,
            patient=patient,
        )
        who = Identity.parse(patient) if patient else None
        await audit.record(
            conn,
            actor=actor,
            origin=envelope.peer,
            action=AUDIT_ACTION,
            outcome="success" if outcome.ack_code == "AA" else "failure",
            patient_id=who.patient_id if who else None,
            issuer=who.issuer if who else None,
            detail=_audit_detail(envelope, outcome),
        )


async def _finish_row(
    archive: Archive, log_id: int, outcome: Outcome, source: str | None, patient: str | None
) -> None:
    async with archive.db.acquire() as conn:
        await hl7_messages.finish(
            conn,
            log_id,
            ack_code=outcome.ack_code,
            outcome=outcome.outcome,
            detail=outcome.text,
            change_ids=outcome.change_ids,
            source=source,
            patient=patient,
        )


def _audit_detail(envelope: Envelope, outcome: Outcome) -> dict[str, Any]:
    return {
        "control_id": envelope.control_id,
        "sending_facility": envelope.sending_facility,
        "message_type": envelope.message_type,
        "ack": outcome.ack_code,
        "outcome": outcome.outcome,
        "text": outcome.text,
        "error_code": outcome.error_code,
        "changes": list(outcome.change_ids),
        "duplicate": outcome.duplicate,
        "log": outcome.log_id,
    }
