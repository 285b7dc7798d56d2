"""Pure parts of the security layer: audit rows as PS3.15 A.5 messages, roles, time options."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from vna.cli.security import parse_time
from vna.errors import InvalidRequest
from vna.security.audit_message import audit_message, event_of
from vna.security.tokens import Principal, check_token_request

AT = dt.datetime(2025, 3, 4, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))


def row(action: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": 7,
        "at": AT,
        "actor": "HOSP1PACS",
        "origin": "10.1.0.5",
        "action": action,
        "outcome": "success",
        "patient_id": None,
        "issuer": None,
        "study_uid": None,
        "series_uid": None,
        "sop_uid": None,
        "study_uids": None,
        "patient_ids": None,
        "detail": {},
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("action", "detail", "event_id", "code", "type_code"),
    [
        ("store", {"protocol": "dimse"}, "110104", "C", None),
        ("store", {"protocol": "import"}, "110107", "C", None),
        ("replace", {}, "110104", "U", None),
        ("quarantine", {}, "110104", "C", None),
        ("retrieve", {"operation": "C-MOVE"}, "110104", "R", None),
        ("metadata", {}, "110103", "R", None),
        ("conflict-discard", {}, "110103", "D", None),
        ("query", {}, "110112", "E", None),
        ("patient-merge", {}, "110110", "U", None),
        ("patient-update-undo", {}, "110110", "U", None),
        ("retention-delete", {}, "110105", "D", None),
        ("token-create", {}, "110113", "E", "110136"),
        ("legal-hold-set", {}, "110113", "E", "110135"),
        ("access-denied", {}, "110113", "E", "110132"),
        ("association-rejected", {}, "110113", "E", "110126"),
        ("authentication-failed", {}, "110114", "E", "110122"),
        ("dr-failover", {}, "110100", "E", None),
    ],
)
def test_each_action_has_its_event(action, detail, event_id, code, type_code):
    event = event_of(action, detail)
    assert (event.event_id.code, event.action_code) == (event_id, code)
    assert (event.type_code.code if event.type_code else None) == type_code


def test_a_store_message_names_sender_archive_study_and_patient():
    message = audit_message(
        row(
            "store",
            patient_id="P1",
            issuer="HOSP1",
            study_uid="1.2.3",
            series_uid="1.2.3.4",
            sop_uid="1.2.3.4.5",
            detail={"protocol": "dimse", "source": "H1"},
        ),
        "VNA",
    )
    event = message["EventIdentification"]
    assert event["EventID"]["originalText"] == "DICOM Instances Transferred"
    assert event["EventDateTime"] == "2025-03-04T09:30:00.000+00:00"
    assert event["EventOutcomeIndicator"] == 0
    sender, archive = message["ActiveParticipant"]
    assert sender["UserID"] == "HOSP1PACS" and sender["UserIsRequestor"] is True
    assert sender["RoleIDCode"][0]["csd-code"] == "110153"  # Source Role ID
    assert sender["NetworkAccessPointID"] == "10.1.0.5"
    assert archive["RoleIDCode"][0]["csd-code"] == "110152"  # Destination Role ID
    study, patient = message["ParticipantObjectIdentification"]
    assert study["ParticipantObjectID"] == "1.2.3"
    details = {
        d["type"]: base64.b64decode(d["value"]).decode() for d in study["ParticipantObjectDetail"]
    }
    assert details == {"SeriesInstanceUID": "1.2.3.4", "SOPInstanceUID": "1.2.3.4.5"}
    assert patient["ParticipantObjectID"] == "P1^^^HOSP1"  # HL7 CX with the issuer
    assert (patient["ParticipantObjectTypeCode"], patient["ParticipantObjectTypeCodeRole"]) == (
        1,
        1,
    )
    assert message["vna"] == {
        "id": 7,
        "action": "store",
        "detail": {"protocol": "dimse", "source": "H1"},
    }


def test_a_query_over_several_studies_lists_each_and_the_query():
    message = audit_message(
        row(
            "query",
            actor="ris",
            origin="",
            study_uids=["1.1", "1.2"],
            patient_ids=["A", "B"],
            detail={
                "protocol": "qido-rs",
                "path": "/dicom-web/studies",
                "query": "PatientName=DOE*",
                "patients": [["A", ""], ["B", "H2"]],
            },
        ),
        "VNA",
    )
    objects = message["ParticipantObjectIdentification"]
    assert [o["ParticipantObjectID"] for o in objects] == [
        "1.1",
        "1.2",
        "A",
        "B^^^H2",
        "/dicom-web/studies",
    ]
    query = objects[-1]
    assert query["ParticipantObjectIDTypeCode"]["originalText"] == "URI"
    assert base64.b64decode(query["ParticipantObjectQuery"]) == b"PatientName=DOE*"
    requester = message["ActiveParticipant"][0]
    assert "NetworkAccessPointID" not in requester  # a command-line user has no address


def test_a_refusal_is_a_failure_with_its_reason():
    message = audit_message(
        row(
            "authentication-failed",
            actor="unknown",
            outcome="failure",
            detail={"reason": "bearer token unknown", "path": "/dicom-web/studies"},
        ),
        "VNA",
    )
    event = message["EventIdentification"]
    assert event["EventOutcomeIndicator"] == 4  # minor failure
    assert event["EventOutcomeDescription"] == "bearer token unknown"
    (alert,) = message["ParticipantObjectIdentification"]
    assert alert["ParticipantObjectDetail"][0]["type"] == "Alert Description"


def test_roles():
    admin = Principal("ops", "admin")
    reader = Principal("ris", "reader")
    restricted = Principal("viewer", "reader", read_sources=("H1",))
    source = Principal("pacs", "source", source="H1")
    reading_source = Principal("pacs", "source", source="H1", read_sources=("H1",))
    open_ = Principal("anonymous", "open")
    assert [p.may_store for p in (admin, reader, source, open_)] == [False, False, True, True]
    assert [p.may_read for p in (admin, reader, restricted, source, reading_source)] == [
        True,
        True,
        True,
        False,
        True,
    ]
    assert [p.may_administer for p in (admin, reader, source, open_)] == [True, False, False, True]
    assert restricted.may_read_source("H1") and not restricted.may_read_source("H2")
    assert reader.readable_sources is None and source.readable_sources == ()


def test_token_requests_are_checked():
    known = ["H1", "H2", "DEFAULT"]
    check_token_request("pacs-1", "source", "H1", None, known)
    check_token_request("viewer", "reader", None, ["H1", "H2"], known)
    with pytest.raises(InvalidRequest, match="--role"):
        check_token_request("x", "superuser", None, None, known)
    with pytest.raises(InvalidRequest, match="token name"):
        check_token_request("x" * 65, "reader", None, None, known)


def test_time_options():
    now = dt.datetime(2025, 3, 4, 12, 0, tzinfo=dt.UTC)
    assert parse_time("24h", now, "--since") == now - dt.timedelta(hours=24)
    assert parse_time("7d", now, "--since") == now - dt.timedelta(days=7)
    assert parse_time("30m", now, "--since") == now - dt.timedelta(minutes=30)
    assert parse_time("2025-01-31", now, "--since") == dt.datetime(2025, 1, 31, tzinfo=dt.UTC)
    assert parse_time("2025-01-31T08:00+01:00", now, "--until") == dt.datetime(
        2025, 1, 31, 7, 0, tzinfo=dt.UTC
    )
    with pytest.raises(InvalidRequest, match="--until 'soon'"):
        parse_time("soon", now, "--until")
