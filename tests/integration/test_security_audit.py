"""The audit trail: every store and read over DICOMweb and DIMSE leaves a row naming who, from
where, what and when; `vna audit` finds them and exports DICOM audit messages (PS3.15 A.5);
a read whose audit row cannot be written is refused."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.factory import ct_study, part10
from tests.integration.test_dimse import (
    StorageSCP,
    association,
    find,
    move,
    scu,
    store,
    study_keys,
)
from tests.security_support import (
    ACCEPT_DICOM,
    audit_rows,
    call,
    config_file,
    serving,
    stow,
    vna,
)
from vna.archive import Archive
from vna.config import DestinationSettings, DimseSettings, Settings, SourceSettings
from vna.gateway.dimse import DimseListener

pytestmark = pytest.mark.asyncio
Start = Callable[..., Awaitable[tuple[Archive, DimseListener]]]


@pytest.fixture
async def dimse_archive(archive_settings: Settings) -> AsyncIterator[Start]:
    """Open the test's archive with its DIMSE listener on a free loopback port."""
    started: list[tuple[Archive, DimseListener]] = []

    async def start(**overrides: Any) -> tuple[Archive, DimseListener]:
        settings = dataclasses.replace(
            archive_settings,
            dimse=DimseSettings(host="127.0.0.1", port=0, network_timeout=30),
            **overrides,
        )
        archive = await Archive.open(settings)
        listener = DimseListener(archive)
        await listener.start()
        started.append((archive, listener))
        return archive, listener

    yield start
    for archive, listener in reversed(started):
        await listener.stop(grace_seconds=5)
        await archive.close()


@pytest.fixture
def destination() -> Iterator[StorageSCP]:
    scp = StorageSCP()
    try:
        yield scp
    finally:
        scp.stop()


def c_get(port: int, study_uid: str) -> Dataset:
    """C-GET of a study over the requester's association; the final response."""

    def on_store(event: Any) -> int:
        return 0x0000

    contexts = [
        (StudyRootQueryRetrieveInformationModelGet, [ImplicitVRLittleEndian]),
        (CTImageStorage, [ExplicitVRLittleEndian]),
    ]
    role = build_role(CTImageStorage, scp_role=True)
    with association(
        port, contexts, ext_neg=[role], handlers=[(evt.EVT_C_STORE, on_store)]
    ) as assoc:
        assert assoc.is_established
        last = None
        for status, _ in assoc.send_c_get(
            study_keys("STUDY", StudyInstanceUID=study_uid),
            StudyRootQueryRetrieveInformationModelGet,
        ):
            last = status
        assert last is not None
        return last


def _code(message: dict[str, Any]) -> tuple[str, str]:
    e = message["EventIdentification"]
    return e["EventID"]["csd-code"], e["EventActionCode"]


async def test_every_access_is_audited_and_exported(
    dimse_archive: Start, destination: StorageSCP, tmp_path, capsys
):
    archive, listener = await dimse_archive(
        destinations=(
            DestinationSettings(
                name="ws", ae_title="TESTDEST", host="127.0.0.1", port=destination.port
            ),
        )
    )
    dimse_study = ct_study(patient_id="PAT001", series=2, slices=1)
    web_study = ct_study(patient_id="PAT002", series=1, slices=1)
    uid1, uid2 = dimse_study[0].StudyInstanceUID, web_study[0].StudyInstanceUID
    assert await scu(store, listener.port, dimse_study) == [0, 0]

    async with serving(archive) as root:
        web = f"{root}/dicom-web"
        assert (await stow(root, [part10(web_study[0])])).status == 200
        assert (await call("GET", f"{web}/studies?PatientID=PAT*")).status == 200
        got = await call("GET", f"{web}/studies/{uid1}", accept=ACCEPT_DICOM)
        assert got.status == 200
        assert (await call("GET", f"{web}/studies/{uid2}/metadata")).status == 200
        # A retrieve that finds nothing discloses nothing: no read row.
        assert (await call("GET", f"{web}/studies/1.2.3/metadata")).status == 404

    found, status = await scu(
        find,
        listener.port,
        StudyRootQueryRetrieveInformationModelFind,
        study_keys("STUDY", StudyInstanceUID="", PatientID="PAT001"),
    )
    assert status == 0 and len(found) == 1
    patients, status = await scu(
        find,
        listener.port,
        PatientRootQueryRetrieveInformationModelFind,
        study_keys("PATIENT", PatientID="PAT*", PatientName=""),
    )
    assert status == 0 and len(patients) == 2
    moved = await scu(
        move,
        listener.port,
        StudyRootQueryRetrieveInformationModelMove,
        study_keys("STUDY", StudyInstanceUID=uid1),
        "TESTDEST",
    )
    assert moved.Status == 0 and len(destination.received) == 2
    assert (await scu(c_get, listener.port, uid2)).Status == 0

    rows = await audit_rows(archive)
    summary = [
        (r["action"], r["actor"], (r["detail"] or {}).get("operation") or r["detail"]["protocol"])
        for r in rows
    ]
    assert summary == [
        ("store", "SCU", "dimse"),
        ("store", "SCU", "dimse"),
        ("store", "anonymous", "stow-rs"),
        ("query", "anonymous", "qido-rs"),
        ("retrieve", "anonymous", "wado-rs"),
        ("metadata", "anonymous", "wado-rs"),
        ("query", "SCU", "C-FIND"),
        ("query", "SCU", "C-FIND"),
        ("retrieve", "SCU", "C-MOVE"),
        ("retrieve", "SCU", "C-GET"),
    ]
    assert all(r["origin"] == "127.0.0.1" and r["outcome"] == "success" for r in rows)
    qido, wado, meta, cfind, pfind, cmove, cget = rows[3:]
    # One row per request, naming every study and patient the answer disclosed.
    assert sorted(qido["study_uids"]) == sorted([uid1, uid2])
    assert sorted(qido["patient_ids"]) == ["PAT001", "PAT002"] and qido["patient_id"] is None
    assert qido["detail"]["query"] == "PatientID=PAT*" and qido["detail"]["matches"] == 2
    assert (wado["study_uid"], wado["patient_id"]) == (uid1, "PAT001")
    assert wado["detail"]["instances"] == 2
    assert (meta["study_uid"], meta["patient_id"]) == (uid2, "PAT002")
    assert (cfind["study_uid"], cfind["patient_id"]) == (uid1, "PAT001")
    assert "PAT001" in cfind["detail"]["query"]
    assert pfind["study_uids"] == [] and sorted(pfind["patient_ids"]) == ["PAT001", "PAT002"]
    assert (cmove["study_uid"], cmove["detail"]["destination"]) == (uid1, "TESTDEST")
    assert (cget["study_uid"], cget["detail"]["instances"]) == (uid2, 1)

    # `vna audit`: by study, patient, user, action, time; A.5 messages as JSON lines.
    config = config_file(archive.settings, tmp_path / "vna.toml")

    async def audit(*argv: str) -> list[dict[str, Any]]:
        code, out, err = await vna(capsys, config, "audit", "--format", "jsonl", *argv)
        assert code == 0, err
        return [json.loads(line) for line in out.splitlines()]

    by_study = await audit("--study", uid1)
    assert [m["vna"]["action"] for m in by_study] == [
        "store",
        "store",
        "query",
        "retrieve",
        "query",
        "retrieve",
    ]
    assert [_code(m) for m in by_study] == [
        ("110104", "C"),
        ("110104", "C"),
        ("110112", "E"),
        ("110104", "R"),
        ("110112", "E"),
        ("110104", "R"),
    ]
    by_patient = await audit("--patient", "PAT002")
    assert [m["vna"]["action"] for m in by_patient] == [
        "store",
        "query",
        "metadata",
        "query",
        "retrieve",
    ]
    assert [_code(m) for m in by_patient][2] == ("110103", "R")
    assert {m["vna"]["action"] for m in await audit("--user", "anonymous")} == {
        "store",
        "query",
        "retrieve",
        "metadata",
    }
    assert len(await audit("--action", "query")) == 3
    assert len(await audit("--since", "1h")) == len(rows)
    assert await audit("--until", "2000-01-01") == []
    assert len(await audit("--since", "2000-01-01T00:00:00+00:00")) == len(rows)

    # The A.5 fields of one message: a C-MOVE by SCU to TESTDEST (A.5.3.7).
    (message,) = [m for m in by_study if m["vna"]["detail"].get("operation") == "C-MOVE"]
    event = message["EventIdentification"]
    assert event["EventID"] == {
        "csd-code": "110104",
        "codeSystemName": "DCM",
        "originalText": "DICOM Instances Transferred",
    }
    assert event["EventOutcomeIndicator"] == 0 and event["EventDateTime"].endswith("+00:00")
    requester, server, receiver = message["ActiveParticipant"]
    assert requester["UserID"] == "SCU" and requester["UserIsRequestor"] is True
    assert requester["NetworkAccessPointID"] == "127.0.0.1"
    assert requester["NetworkAccessPointTypeCode"] == "2"
    assert server["UserID"] == "VNA" and server["UserIsRequestor"] is False
    assert server["RoleIDCode"][0]["csd-code"] == "110153"  # Source Role ID
    assert receiver["UserID"] == "TESTDEST" and receiver["RoleIDCode"][0]["csd-code"] == "110152"
    assert message["AuditSourceIdentification"]["AuditSourceID"] == "VNA"
    study_object, patient_object = message["ParticipantObjectIdentification"]
    assert study_object["ParticipantObjectIDTypeCode"]["csd-code"] == "110180"
    assert study_object["ParticipantObjectID"] == uid1
    assert (
        study_object["ParticipantObjectTypeCode"],
        study_object["ParticipantObjectTypeCodeRole"],
    ) == (2, 3)
    assert patient_object["ParticipantObjectIDTypeCode"] == {
        "csd-code": "2",
        "codeSystemName": "RFC-3881",
        "originalText": "Patient Number",
    }
    assert patient_object["ParticipantObjectID"] == "PAT001"
    # A query message carries the query itself (A.5.3.10): the C-FIND identifier.
    (c_find,) = [m for m in by_study if m["vna"]["detail"].get("operation") == "C-FIND"]
    (queried,) = [
        o
        for o in c_find["ParticipantObjectIdentification"]
        if o["ParticipantObjectIDTypeCode"]["csd-code"] == "110181"
    ]
    assert queried["ParticipantObjectID"] == str(StudyRootQueryRetrieveInformationModelFind)
    assert "PAT001" in base64.b64decode(queried["ParticipantObjectQuery"]).decode()

    # The table form, for a person at a terminal.
    code, out, _ = await vna(capsys, config, "audit", "--study", uid2)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("at (UTC)") and len(lines) == 1 + 4  # store, query, metadata, C-GET
    assert any("C-GET" in line and "PAT002" in line for line in lines)
    assert any(uid2 in line for line in lines[1:])  # the whole UID, not cut short
    code, _, err = await vna(capsys, config, "audit", "--since", "yesterday")
    assert code == 1 and "--since 'yesterday' is not a date" in err


async def test_refusals_and_token_changes_are_audited(dimse_archive: Start, tmp_path, capsys):
    archive, listener = await dimse_archive(
        sources=(SourceSettings(name="H1", ae_titles=("H1PACS",)),)
    )

    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    def echo_from(calling: str) -> bool:
        with association(
            listener.port, [(Verification, [ImplicitVRLittleEndian])], calling=calling
        ) as assoc:
            return bool(assoc.is_established)

    assert await scu(echo_from, "INTRUDER") is False
    config = config_file(archive.settings, tmp_path / "vna.toml")
    code, _, _ = await vna(capsys, config, "tokens", "create", "ris", "--role", "reader")
    assert code == 0
    code, _, _ = await vna(capsys, config, "tokens", "revoke", "ris")
    assert code == 0

    code, out, _ = await vna(capsys, config, "audit", "--format", "jsonl")
    messages = {m["vna"]["action"]: m for m in map(json.loads, out.splitlines())}
    rejected = messages["association-rejected"]
    assert rejected["EventIdentification"]["EventID"]["csd-code"] == "110113"  # Security Alert
    assert rejected["EventIdentification"]["EventTypeCode"][0]["csd-code"] == "110126"
    assert rejected["EventIdentification"]["EventOutcomeIndicator"] == 4
    assert rejected["ActiveParticipant"][0]["UserID"] == "INTRUDER"
    created = messages["token-create"]
    assert created["EventIdentification"]["EventTypeCode"][0]["originalText"] == (
        "Security Roles Changed"
    )
    assert created["ActiveParticipant"][0]["UserID"].startswith("user:")
    (token_object,) = created["ParticipantObjectIdentification"]
    assert token_object["ParticipantObjectID"] == "ris"
    assert token_object["ParticipantObjectTypeCodeRole"] == 11  # Security User Entity
    assert "token-revoke" in messages


_FAIL_AUDIT = """
CREATE FUNCTION audit_unwritable() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'audit volume full'; END $$;
CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit
FOR EACH ROW EXECUTE FUNCTION audit_unwritable();
"""


async def test_a_read_whose_audit_cannot_be_written_is_refused(dimse_archive: Start):
    archive, listener = await dimse_archive()
    (ds,) = ct_study(series=1, slices=1)
    assert await scu(store, listener.port, [ds]) == [0]
    uid = ds.StudyInstanceUID
    async with serving(archive) as root:
        web = f"{root}/dicom-web"
        async with archive.db.acquire() as conn:
            await conn.execute(_FAIL_AUDIT)

        query = await call("GET", f"{web}/studies")
        assert query.status == 503 and b"audit trail cannot be written" in query.body
        assert query.body.count(b"1.2.") == 0  # no match leaked
        assert (await call("GET", f"{web}/studies/{uid}", accept=ACCEPT_DICOM)).status == 503
        assert (await call("GET", f"{web}/studies/{uid}/metadata")).status == 503
        found, status = await scu(
            find,
            listener.port,
            StudyRootQueryRetrieveInformationModelFind,
            study_keys("STUDY", StudyInstanceUID=""),
        )
        assert (found, status) == ([], 0xA700)  # Refused: Out of resources
        assert (await scu(c_get, listener.port, uid)).Status == 0xA701
        metrics = (await call("GET", f"{root}/metrics", accept="text/plain")).body.decode()
        assert "vna_audit_write_failures_total 5.0" in metrics

        async with archive.db.acquire() as conn:
            await conn.execute("DROP TRIGGER audit_unwritable ON audit")
        assert (await call("GET", f"{web}/studies")).status == 200
    assert [r["action"] for r in await audit_rows(archive)] == ["store", "query"]
