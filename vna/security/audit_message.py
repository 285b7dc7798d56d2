"""Audit rows as DICOM audit messages (PS3.15 A.5), one JSON object each.

Pure: no I/O.  The JSON mirrors the DICOM Audit Message Schema (PS3.15 A.5.1): element names
as keys, a coded value as ``{"csd-code", "codeSystemName", "originalText"}``, and a
ParticipantObjectQuery or ParticipantObjectDetail value base64-encoded as the schema's
``xs:base64Binary``.  Each row becomes the message of its event (PS3.15 A.5.3):

========================================  ======================================  ======
archive action                            EventID                                 Action
========================================  ======================================  ======
store, quarantine (STOW-RS, C-STORE)      110104 DICOM Instances Transferred      C
store (``vna import``)                    110107 Import                           C
replace                                   110104 DICOM Instances Transferred      U
retrieve (WADO-RS, C-MOVE, C-GET)         110104 DICOM Instances Transferred      R
metadata (WADO-RS)                        110103 DICOM Instances Accessed         R
conflict-accept / conflict-discard        110103 DICOM Instances Accessed         U / D
query (QIDO-RS, C-FIND), retention-review 110112 Query                            E
patient-update/merge/link/... and undo    110110 Patient Record                   U
retention-delete                          110105 DICOM Study Deleted              D
token-create / token-revoke               110113 Security Alert (110136)          E
legal-hold-set / legal-hold-release       110113 Security Alert (110135)          E
retention-approve, access-denied          110113 Security Alert (110132)          E
association-rejected                      110113 Security Alert (110126)          E
authentication-failed                     110114 User Authentication (110122)     E
anything else                             110100 Application Activity             E
========================================  ======================================  ======
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Code:
    """A coded value (PS3.15 A.5.1: ``CodedValueType``)."""

    code: str
    system: str
    text: str

    def json(self) -> dict[str, str]:
        return {"csd-code": self.code, "codeSystemName": self.system, "originalText": self.text}


# Audit Event ID (PS3.16 CID 400).
APPLICATION_ACTIVITY = Code("110100", "DCM", "Application Activity")
INSTANCES_ACCESSED = Code("110103", "DCM", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
STUDY_DELETED = Code("110105", "DCM", "DICOM Study Deleted")
IMPORT = Code("110107", "DCM", "Import")
PATIENT_RECORD = Code("110110", "DCM", "Patient Record")
QUERY = Code("110112", "DCM", "Query")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")
# Event Type Codes (PS3.16 CID 403 Security Alert Type, CID 402 User Authentication).
LOGIN = Code("110122", "DCM", "Login")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
USE_OF_RESTRICTED_FUNCTION = Code("110132", "DCM", "Use of Restricted Function")
OBJECT_SECURITY_ATTRIBUTES_CHANGED = Code("110135", "DCM", "Object Security Attributes Changed")
SECURITY_ROLES_CHANGED = Code("110136", "DCM", "Security Roles Changed")
# Active Participant Role ID (PS3.16 CID 402).
APPLICATION = Code("110150", "DCM", "Application")
DESTINATION_ROLE = Code("110152", "DCM", "Destination Role ID")
SOURCE_ROLE = Code("110153", "DCM", "Source Role ID")
# Participant Object ID Type (PS3.16 CID 404, and the RFC 3881 codes A.5.2 keeps).
STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
USER_IDENTIFIER = Code("11", "RFC-3881", "User Identifier")
URI = Code("12", "RFC-3881", "URI")

# EventOutcomeIndicator (PS3.15 A.5.2): 0 success, 4 minor, 8 serious, 12 major failure.
_OUTCOMES = {"success": 0, "failure": 4, "serious": 8, "major": 12}

# ParticipantObjectTypeCode and ...TypeCodeRole (PS3.15 A.5.2.5, A.5.2.6).
_PERSON, _SYSTEM_OBJECT = 1, 2
_ROLE_PATIENT, _ROLE_REPORT, _ROLE_SECURITY_USER = 1, 3, 11
# NetworkAccessPointTypeCode (PS3.15 A.5.2): 1 machine name, 2 IP address.
_MACHINE_NAME, _IP_ADDRESS = "1", "2"


@dataclass(frozen=True)
class Event:
    """What an archive action is in A.5 terms."""

    event_id: Code
    action_code: str
    type_code: Code | None = None
    #: Which participant the data flowed from: the requester, the archive, or neither.
    data_from: str | None = None


_BY_ACTION: dict[str, Event] = {
    "store": Event(INSTANCES_TRANSFERRED, "C", data_from="requester"),
    "quarantine": Event(INSTANCES_TRANSFERRED, "C", data_from="requester"),
    "replace": Event(INSTANCES_TRANSFERRED, "U", data_from="requester"),
    "retrieve": Event(INSTANCES_TRANSFERRED, "R", data_from="archive"),
    "metadata": Event(INSTANCES_ACCESSED, "R"),
    "conflict-accept": Event(INSTANCES_ACCESSED, "U"),
    "conflict-discard": Event(INSTANCES_ACCESSED, "D"),
    # A.5.3.10: the process issuing the query has the Source role, the one answering the
    # Destination role.
    "query": Event(QUERY, "E", data_from="requester"),
    "retention-review": Event(QUERY, "E"),
    "retention-delete": Event(STUDY_DELETED, "D"),
    "retention-approve": Event(SECURITY_ALERT, "E", USE_OF_RESTRICTED_FUNCTION),
    "legal-hold-set": Event(SECURITY_ALERT, "E", OBJECT_SECURITY_ATTRIBUTES_CHANGED),
    "legal-hold-release": Event(SECURITY_ALERT, "E", OBJECT_SECURITY_ATTRIBUTES_CHANGED),
    "token-create": Event(SECURITY_ALERT, "E", SECURITY_ROLES_CHANGED),
    "token-revoke": Event(SECURITY_ALERT, "E", SECURITY_ROLES_CHANGED),
    "access-denied": Event(SECURITY_ALERT, "E", USE_OF_RESTRICTED_FUNCTION),
    "association-rejected": Event(SECURITY_ALERT, "E", NODE_AUTHENTICATION),
    "authentication-failed": Event(USER_AUTHENTICATION, "E", LOGIN),
}


def event_of(action: str, detail: Mapping[str, Any]) -> Event:
    """The A.5 event of an archive action (the module's table)."""
    if action == "store" and detail.get("protocol") == "import":
        return Event(IMPORT, "C", data_from="requester")
    if action.startswith("patient-"):
        return Event(PATIENT_RECORD, "U")
    return _BY_ACTION.get(action, Event(APPLICATION_ACTIVITY, "E"))


def audit_message(row: Mapping[str, Any], audit_source_id: str) -> dict[str, Any]:
    """The A.5 message of one audit row; ``audit_source_id`` names the archive (its AE title)."""
    detail: Mapping[str, Any] = row.get("detail") or {}
    event = event_of(row["action"], detail)
    identification: dict[str, Any] = {
        "EventID": event.event_id.json(),
        "EventActionCode": event.action_code,
        "EventDateTime": _datetime(row["at"]),
        "EventOutcomeIndicator": _OUTCOMES.get(row.get("outcome") or "success", 4),
    }
    if event.type_code is not None:
        identification["EventTypeCode"] = [event.type_code.json()]
    if row.get("outcome") not in (None, "success") and detail.get("reason"):
        identification["EventOutcomeDescription"] = str(detail["reason"])
    return {
        "EventIdentification": identification,
        "ActiveParticipant": _participants(row, detail, event, audit_source_id),
        # AuditSourceTypeCode 4: application server process (PS3.15 A.5.2, RFC 3881 5.4).
        "AuditSourceIdentification": {
            "AuditSourceID": audit_source_id,
            "AuditSourceTypeCode": [{"csd-code": "4"}],
        },
        "ParticipantObjectIdentification": _objects(row, detail, event),
        # The archive's own record, for what the message has no field for.
        "vna": {"id": row.get("id"), "action": row["action"], "detail": dict(detail)},
    }


def _participants(
    row: Mapping[str, Any], detail: Mapping[str, Any], event: Event, archive: str
) -> list[dict[str, Any]]:
    requester: dict[str, Any] = {"UserID": row["actor"], "UserIsRequestor": True}
    if row.get("origin"):
        origin = str(row["origin"])
        requester["NetworkAccessPointID"] = origin
        requester["NetworkAccessPointTypeCode"] = _IP_ADDRESS if _is_ip(origin) else _MACHINE_NAME
    server: dict[str, Any] = {"UserID": archive, "UserIsRequestor": False}
    participants = [requester, server]
    destination = detail.get("destination")
    if event.data_from == "requester":
        requester["RoleIDCode"] = [SOURCE_ROLE.json()]
        server["RoleIDCode"] = [DESTINATION_ROLE.json()]
    elif event.data_from == "archive":
        server["RoleIDCode"] = [SOURCE_ROLE.json()]
        if destination:
            # C-MOVE: the data goes to a third node, not to the requester (A.5.3.7).
            participants.append(
                {
                    "UserID": str(destination),
                    "UserIsRequestor": False,
                    "RoleIDCode": [DESTINATION_ROLE.json()],
                }
            )
        else:
            requester["RoleIDCode"] = [DESTINATION_ROLE.json()]
    else:
        server["RoleIDCode"] = [APPLICATION.json()]
    return participants


def _objects(
    row: Mapping[str, Any], detail: Mapping[str, Any], event: Event
) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    studies = list(row.get("study_uids") or ([row["study_uid"]] if row.get("study_uid") else []))
    for uid in studies:
        study: dict[str, Any] = {
            "ParticipantObjectTypeCode": _SYSTEM_OBJECT,
            "ParticipantObjectTypeCodeRole": _ROLE_REPORT,
            "ParticipantObjectIDTypeCode": STUDY_INSTANCE_UID.json(),
            "ParticipantObjectID": uid,
        }
        details = []
        if len(studies) == 1:
            for key, column in (("SeriesInstanceUID", "series_uid"), ("SOPInstanceUID", "sop_uid")):
                if row.get(column):
                    details.append(_detail(key, str(row[column])))
            if detail.get("instances") is not None:
                details.append(_detail("NumberOfInstances", str(detail["instances"])))
        if details:
            study["ParticipantObjectDetail"] = details
        objects.append(study)
    for patient_id, issuer in _patients(row, detail):
        objects.append(
            {
                "ParticipantObjectTypeCode": _PERSON,
                "ParticipantObjectTypeCodeRole": _ROLE_PATIENT,
                "ParticipantObjectIDTypeCode": PATIENT_NUMBER.json(),
                # HL7 v2 CX: ID^^^assigning authority (the issuer of patient ID).
                "ParticipantObjectID": f"{patient_id}^^^{issuer}" if issuer else patient_id,
            }
        )
    if event.event_id == QUERY and "query" in detail:
        model = detail.get("model")
        objects.append(
            {
                "ParticipantObjectTypeCode": _SYSTEM_OBJECT,
                "ParticipantObjectTypeCodeRole": _ROLE_REPORT,
                "ParticipantObjectIDTypeCode": (SOP_CLASS_UID if model else URI).json(),
                "ParticipantObjectID": str(model or detail.get("path", "")),
                "ParticipantObjectQuery": _b64(str(detail["query"])),
            }
        )
    if "token" in detail:
        objects.append(
            {
                "ParticipantObjectTypeCode": _SYSTEM_OBJECT,
                "ParticipantObjectTypeCodeRole": _ROLE_SECURITY_USER,
                "ParticipantObjectIDTypeCode": USER_IDENTIFIER.json(),
                "ParticipantObjectID": str(detail["token"]),
                "ParticipantObjectDetail": [
                    _detail(k, str(detail[k]))
                    for k in ("role", "source", "read_sources")
                    if detail.get(k) is not None
                ],
            }
        )
    if event.event_id in (SECURITY_ALERT, USER_AUTHENTICATION) and detail.get("reason"):
        # A.5.3.11: the alert subject carries an "Alert Description".
        objects.append(
            {
                "ParticipantObjectTypeCode": _SYSTEM_OBJECT,
                "ParticipantObjectTypeCodeRole": _ROLE_REPORT,
                "ParticipantObjectIDTypeCode": URI.json(),
                "ParticipantObjectID": str(detail.get("path") or row["action"]),
                "ParticipantObjectDetail": [_detail("Alert Description", str(detail["reason"]))],
            }
        )
    return objects


def _patients(row: Mapping[str, Any], detail: Mapping[str, Any]) -> list[tuple[str, str]]:
    listed = detail.get("patients")
    if isinstance(listed, list) and listed:
        return [(str(p[0]), str(p[1] or "")) for p in listed if isinstance(p, list) and p]
    if row.get("patient_id"):
        return [(str(row["patient_id"]), str(row.get("issuer") or ""))]
    return []


def _detail(kind: str, value: str) -> dict[str, str]:
    return {"type": kind, "value": _b64(value)}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _datetime(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    return str(value)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    return True
