"""IOCM rejection notes (vna.dicom.iocm): which KOS is a rejection note, what it names, and the
note the archive builds for POST .../reject (read back as a PACS would)."""

from __future__ import annotations

import datetime as dt
import io

import pydicom
import pytest

from vna.dicom.iocm import (
    KEY_OBJECT_SELECTION,
    Reference,
    build_rejection_note,
    parse_code,
    rejection_note,
)
from vna.dicom.parse import dicom_json
from vna.errors import InvalidRequest

STUDY = {
    "PatientName": "DOE^JANE",
    "PatientID": "PAT1",
    "IssuerOfPatientID": "HOSP1",
    "PatientBirthDate": "19700101",
    "PatientSex": "F",
    "StudyInstanceUID": "1.2.3",
    "StudyDate": "20240115",
    "StudyTime": "101500",
    "ReferringPhysicianName": "",
    "StudyID": "1",
    "AccessionNumber": "ACC1",
}
REFS = [
    Reference("1.2.3", "1.2.3.1", "1.2.3.1.1", "1.2.840.10008.5.1.4.1.1.2"),
    Reference("1.2.3", "1.2.3.1", "1.2.3.1.2", "1.2.840.10008.5.1.4.1.1.2"),
    Reference("1.2.3", "1.2.3.2", "1.2.3.2.1", "1.2.840.10008.5.1.4.1.1.88.11", image=False),
]
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _round_trip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        ("113001", "Rejected for Quality Reasons"),
        ("113037", "Rejected for Patient Safety Reasons"),
        ("113038", "Incorrect Modality Worklist Entry"),
        ("113039", "Data Retention Policy Expired"),
    ],
)
def test_built_note_is_recognised_with_its_references(code: str, meaning: str) -> None:
    ds = _round_trip(build_rejection_note(STUDY, REFS, code, now=NOW))
    assert ds.SOPClassUID == KEY_OBJECT_SELECTION and ds.Modality == "KO"
    assert ds.PatientID == "PAT1" and ds.StudyInstanceUID == "1.2.3"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "2010"
    assert [i.ValueType for i in ds.ContentSequence] == ["IMAGE", "IMAGE", "COMPOSITE"]
    note = rejection_note(dicom_json(ds))
    assert note is not None
    assert (note.code, note.meaning) == (code, meaning)
    assert note.sop_uid == ds.SOPInstanceUID and note.study_uid == "1.2.3"
    assert [r.sop_uid for r in note.references] == ["1.2.3.1.1", "1.2.3.1.2", "1.2.3.2.1"]
    assert note.own_study == note.references


def test_other_titles_and_classes_are_not_rejection_notes() -> None:
    ds = build_rejection_note(STUDY, REFS, "113001", now=NOW)
    ds.ConceptNameCodeSequence[0].CodeValue = "113000"  # "Of Interest" (CID 7010)
    assert rejection_note(dicom_json(ds)) is None
    ds.ConceptNameCodeSequence[0].CodeValue = "113001"
    ds.ConceptNameCodeSequence[0].CodingSchemeDesignator = "99LOCAL"
    assert rejection_note(dicom_json(ds)) is None
    ds.ConceptNameCodeSequence[0].CodingSchemeDesignator = "DCM"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    assert rejection_note(dicom_json(ds)) is None
    ds.SOPClassUID = KEY_OBJECT_SELECTION
    del ds.CurrentRequestedProcedureEvidenceSequence
    assert rejection_note(dicom_json(ds)) is None


def test_references_outside_the_notes_study_are_not_its_own() -> None:
    other = Reference("9.9.9", "9.9.9.1", "9.9.9.1.1")
    note = rejection_note(
        dicom_json(build_rejection_note(STUDY, [*REFS, other], "113001", now=NOW))
    )
    assert note is not None
    assert other in note.references and other not in note.own_study


def test_path_codes() -> None:
    assert parse_code("113039^DCM") == "113039"
    for bad in ("113039", "113000^DCM", "113001^99DCM", ""):
        with pytest.raises(InvalidRequest):
            parse_code(bad)
