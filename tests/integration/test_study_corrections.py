"""Study corrections and moves against a real archive, over the admin HTTP endpoints and the
command line: visible in QIDO-RS, WADO-RS (metadata and objects) and the audit log, reversible
with the undo of patient changes; late instances of a changed study are filed as the change
did the earlier ones.  And QIDO-RS ``includelinked=true`` following patient links."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.factory import ct_study, part10
from tests.integration.test_federation_admin import (
    ADMIN_TOKEN,
    SOURCES,
    _config_file,
    _sha,
    admin_url,
    audit_actions,
    call,
    retrieve,
    stow,
    study_metadata,
)
from vna.config import AdminSettings, Settings

pytestmark = pytest.mark.asyncio


@pytest.fixture
def archive_settings(archive_settings: Settings) -> Settings:
    return dataclasses.replace(
        archive_settings, sources=SOURCES, admin=AdminSettings(_sha(ADMIN_TOKEN))
    )


async def qido(url: str, query: str) -> list[dict[str, Any]]:
    status, body = await call("GET", f"{url}/{query}")
    if status == 204:
        return []
    assert status == 200, body
    return list(body)


def values(match: dict[str, Any], tag: str) -> list[Any]:
    return list(match.get(tag, {}).get("Value", []))


async def test_study_update_is_visible_everywhere_audited_and_undone(archive, dicomweb):
    admin = admin_url(dicomweb)
    study = ct_study(patient_id="P1", series=2, slices=1, accession="WRONG1")
    other = ct_study(patient_id="P1", series=1, slices=1, accession="OTHER")
    assert await stow(dicomweb, [part10(ds) for ds in study + other], "H1") == 202
    uid = study[0].StudyInstanceUID
    before = {ds.SOPInstanceUID: await retrieve(dicomweb, ds) for ds in study}

    corrected = {
        "AccessionNumber": "RIGHT1",
        "StudyDescription": "CT ABDOMEN",
        "StudyDate": "20240116",
        "ReferringPhysicianName": "JONES^ANN",
    }
    status, result = await call("POST", f"{admin}/studies/{uid}/update", {"set": corrected})
    assert status == 200, result
    change = result["change"]

    # QIDO-RS answers, and matches, with the corrected values.
    (match,) = await qido(dicomweb, "studies?AccessionNumber=RIGHT1")
    assert values(match, "0020000D") == [uid]
    assert values(match, "00081030") == ["CT ABDOMEN"]
    assert values(match, "00080020") == ["20240116"]
    assert values(match, "00080090") == [{"Alphabetic": "JONES^ANN"}]
    assert await qido(dicomweb, "studies?AccessionNumber=WRONG1") == []
    # WADO-RS metadata and the objects themselves, with the previous values recorded.
    for meta in await study_metadata(dicomweb, uid):
        assert meta["00080050"]["Value"] == ["RIGHT1"]
        assert meta["00081030"]["Value"] == ["CT ABDOMEN"]
    stored = await retrieve(dicomweb, study[0])
    assert (stored.AccessionNumber, stored.StudyDate) == ("RIGHT1", "20240116")
    item = stored.OriginalAttributesSequence[-1]
    assert item.ReasonForTheAttributeModification == "CORRECT"
    assert item.ModifiedAttributesSequence[0].AccessionNumber == "WRONG1"
    assert item.ModifiedAttributesSequence[0].StudyDescription == "CT CHEST"
    assert stored.PixelData == study[0].PixelData
    # The other study of the patient is untouched.
    assert (await retrieve(dicomweb, other[0])).AccessionNumber == "OTHER"
    shown = (await call("GET", f"{admin}/studies/{uid}"))[1]
    assert shown["study"]["accession_number"] == "RIGHT1"
    assert shown["patient"] == "P1^^^HOSP1"
    assert [c["id"] for c in shown["changes"]] == [change]
    async with archive.db.acquire() as conn:
        audited = await conn.fetch(
            "SELECT study_uid, detail FROM audit WHERE action = $1", "study-update"
        )
    assert [(a["study_uid"], a["detail"]["change"]) for a in audited] == [(uid, change)]

    # Undo: the catalogue and the objects as they were, bit for bit.
    status, _ = await call("POST", f"{admin}/patients/changes/{change}/undo")
    assert status == 200
    (match,) = await qido(dicomweb, "studies?AccessionNumber=WRONG1")
    assert values(match, "00081030") == ["CT CHEST"]
    assert values(match, "00080020") == ["20240115"]
    for ds in study:
        assert await retrieve(dicomweb, ds) == before[ds.SOPInstanceUID]
    for meta in await study_metadata(dicomweb, uid):
        assert meta["00080050"]["Value"] == ["WRONG1"]
    assert (await call("POST", f"{admin}/patients/changes/{change}/undo"))[0] == 400
    assert "study-update-undo" in await audit_actions(archive)


async def test_study_update_refuses_what_it_cannot_write(archive, dicomweb):
    admin = admin_url(dicomweb)
    study = ct_study(series=1, slices=1)
    assert await stow(dicomweb, [part10(study[0])], "H1") == 202
    uid = study[0].StudyInstanceUID

    async def update(target: str, body: Any) -> tuple[int, Any]:
        return await call("POST", f"{admin}/studies/{target}/update", body)

    for bad, word in (
        ({"set": {"PatientName": "X"}}, "PatientName"),
        ({"set": {"StudyDate": "20241341"}}, "StudyDate"),
        ({"set": {"StudyTime": "25"}}, "StudyTime"),
        ({"set": {"AccessionNumber": "A" * 17}}, "16"),
        ({"set": {"StudyDescription": "a\\b"}}, "backslash"),
        ({"set": {}}, "nothing"),
        ({"set": {"AccessionNumber": "ACC001", "StudyDate": "20240115"}}, "already"),
        ({"set": "AccessionNumber=1"}, "set"),
    ):
        status, body = await update(uid, bad)
        assert status == 400, bad
        assert word in str(body), (bad, body)
    assert (await update("1.2.3.999", {"set": {"AccessionNumber": "X"}}))[0] == 404
    assert (await update("not-a-uid", {"set": {"AccessionNumber": "X"}}))[0] == 400
    # Nothing was changed by the refusals.
    assert (await retrieve(dicomweb, study[0])).AccessionNumber == "ACC001"
    assert (await call("POST", f"{admin}/studies/{uid}/update", {"set": {}}, token=None))[0] == 401


async def test_study_move_from_the_command_line_and_late_instances(
    archive, dicomweb, tmp_path: Path, capsys
):
    from vna.cli import main

    right = ct_study(patient_id="R-1", patient_name="ROE^RITA", series=1, slices=1)
    wrong = ct_study(patient_id="W-9", patient_name="WOE^WALT", series=1, slices=3)
    assert await stow(dicomweb, [part10(right[0])], "H1") == 202
    # The modality filed the study under the wrong patient; two of three images arrived.
    assert await stow(dicomweb, [part10(ds) for ds in wrong[:2]], "H1") == 202
    uid = wrong[0].StudyInstanceUID
    config = _config_file(archive.settings, tmp_path)

    async def vna(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["--config", str(config), *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, _, err = await vna("studies", "move", uid, "--to-patient", "NOBODY", "--issuer", "HOSP1")
    assert code == 1 and "not in the archive" in err
    code, _, err = await vna("studies", "move", uid, "--to-patient", "W-9", "--issuer", "HOSP1")
    assert code == 1 and "already" in err
    code, out, err = await vna("studies", "move", uid, "--to-patient", "R-1", "--issuer", "HOSP1")
    assert code == 0, err
    change = int(out.split()[1].rstrip(":"))

    studies = await qido(dicomweb, "studies?PatientID=R-1&IssuerOfPatientID=HOSP1")
    assert {values(s, "0020000D")[0] for s in studies} == {right[0].StudyInstanceUID, uid}
    assert await qido(dicomweb, "studies?PatientID=W-9") == []
    moved = await retrieve(dicomweb, wrong[0])
    assert (moved.PatientID, moved.PatientName) == ("R-1", "ROE^RITA")
    assert moved.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientID == "W-9"

    # The third image arrives late, still under the wrong patient: filed with the study.
    assert await stow(dicomweb, [part10(wrong[2])], "H1") == 202
    late = await retrieve(dicomweb, wrong[2])
    assert (late.PatientID, late.PatientName) == ("R-1", "ROE^RITA")
    (match,) = await qido(dicomweb, f"studies?StudyInstanceUID={uid}")
    assert values(match, "00201208") == [3]

    code, out, _ = await vna("studies", "update", uid, "--set", "AccessionNumber=ACC-R")
    assert code == 0
    update = int(out.split()[1].rstrip(":"))
    code, out, _ = await vna("studies", "show", uid)
    assert "ACC-R" in out and "study-move" in out and "study-update" in out
    code, _, err = await vna("studies", "update", uid, "--set", "AccessionNumber")
    assert code == 1 and "KEYWORD=VALUE" in err

    # Undo goes in reverse order: the update came later.
    code, _, err = await vna("studies", "undo", str(change))
    assert code == 1 and f"after change {change}" in err
    assert (await vna("studies", "undo", str(update)))[0] == 0
    assert (await retrieve(dicomweb, wrong[0])).AccessionNumber == "ACC001"
    # The late image has no version from before the move: undoing it would leave that image
    # under the right patient in a study of the wrong one.  A move back does it whole.
    code, _, err = await vna("studies", "undo", str(change))
    assert code == 1 and "arrived after" in err and "vna studies move" in err
    code, out, err = await vna("studies", "move", uid, "--to-patient", "W-9", "--issuer", "HOSP1")
    assert code == 0, err
    for ds in wrong:
        back = await retrieve(dicomweb, ds)
        assert (back.PatientID, back.PatientName) == ("W-9", "WOE^WALT")
    studies = await qido(dicomweb, "studies?PatientID=W-9&IssuerOfPatientID=HOSP1")
    assert [values(s, "0020000D")[0] for s in studies] == [uid]
    # Resent by the modality as it was first sent: a duplicate, filed nowhere new.
    assert await stow(dicomweb, [part10(wrong[0])], "H1") == 200
    actions = await audit_actions(archive)
    assert actions.count("study-move") == 2 and actions.count("study-update-undo") == 1


async def test_late_instance_of_a_corrected_study_carries_the_correction(archive, dicomweb):
    admin = admin_url(dicomweb)
    study = ct_study(series=1, slices=2, accession="OLD")
    assert await stow(dicomweb, [part10(study[0])], "H1") == 202
    uid = study[0].StudyInstanceUID
    body = {"set": {"AccessionNumber": "NEW", "StudyDescription": "CT HEAD"}}
    assert (await call("POST", f"{admin}/studies/{uid}/update", body))[0] == 200
    assert await stow(dicomweb, [part10(study[1])], "H1") == 202
    late = await retrieve(dicomweb, study[1])
    assert (late.AccessionNumber, late.StudyDescription) == ("NEW", "CT HEAD")
    assert late.OriginalAttributesSequence[-1].ReasonForTheAttributeModification == "CORRECT"
    for meta in await study_metadata(dicomweb, uid):
        assert meta["00080050"]["Value"] == ["NEW"]


# --- QIDO-RS includelinked ----------------------------------------------------------------------


async def test_qido_includelinked_follows_patient_links(archive, dicomweb):
    admin = admin_url(dicomweb)
    a = ct_study(patient_id="A-1", series=1, slices=1)
    b = ct_study(patient_id="B-2", series=1, slices=1)
    c = ct_study(patient_id="C-3", series=1, slices=1)
    same_id = ct_study(patient_id="A-1", series=1, slices=1)  # A-1 at HOSP2: someone else
    assert await stow(dicomweb, [part10(a[0])], "H1") == 202
    assert await stow(dicomweb, [part10(b[0]), part10(c[0]), part10(same_id[0])], "H2") == 202
    link = {
        "a": {"PatientID": "A-1", "IssuerOfPatientID": "HOSP1"},
        "b": {"PatientID": "B-2", "IssuerOfPatientID": "HOSP2"},
    }
    assert (await call("POST", f"{admin}/patients/links", link))[0] == 200

    def uids(matches: list[dict[str, Any]]) -> set[str]:
        return {values(m, "0020000D")[0] for m in matches}

    plain = "studies?PatientID=A-1&IssuerOfPatientID=HOSP1"
    assert uids(await qido(dicomweb, plain)) == {a[0].StudyInstanceUID}
    linked = await qido(dicomweb, plain + "&includelinked=true")
    assert uids(linked) == {a[0].StudyInstanceUID, b[0].StudyInstanceUID}
    # Other keys still apply, and the other levels follow links too.
    assert uids(await qido(dicomweb, plain + "&includelinked=true&AccessionNumber=none")) == set()
    series = await qido(dicomweb, "series?PatientID=B-2&IssuerOfPatientID=HOSP2&includelinked=true")
    assert uids(series) == {a[0].StudyInstanceUID, b[0].StudyInstanceUID}
    assert uids(await qido(dicomweb, plain + "&includelinked=false")) == {a[0].StudyInstanceUID}
    # Without an issuer: A-1 of every hospital, and what each is linked to.
    assert uids(await qido(dicomweb, "studies?PatientID=A-1&includelinked=true")) == {
        a[0].StudyInstanceUID,
        b[0].StudyInstanceUID,
        same_id[0].StudyInstanceUID,
    }
    # Unknown identity: nothing, not an error.
    assert await qido(dicomweb, "studies?PatientID=ZZ&includelinked=true") == []
    for bad in (
        "studies?includelinked=true",
        "studies?PatientID=A-*&includelinked=true",
        "studies?PatientID=A-1&includelinked=yes",
        "studies?PatientID=A-1&includelinked=true&includelinked=true",
    ):
        status, body = await call("GET", f"{dicomweb}/{bad}")
        assert status == 400 and "includelinked" in str(body), (bad, body)
