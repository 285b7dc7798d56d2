"""Query/Retrieve identifiers of the DIMSE gateway (pure): levels per information model, the
unique keys of C-MOVE and C-GET, PATIENT level keys, and the shape of C-FIND responses."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from vna.errors import InvalidRequest
from vna.gateway.dimse.identifier import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    RetrieveKeys,
    find_response,
    patient_search_identifier,
    query_level,
    retrieve_keys,
)
from vna.gateway.status import error_comment


def identifier(**keys: object) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("model", "level"),
    [
        (PATIENT_ROOT_FIND, "PATIENT"),
        (PATIENT_ROOT_FIND, "STUDY"),
        (PATIENT_ROOT_MOVE, "IMAGE"),
        (STUDY_ROOT_MOVE, "SERIES"),
        (STUDY_ROOT_GET, "image "),
    ],
)
def test_levels_of_each_model(model: str, level: str) -> None:
    assert query_level(model, identifier(QueryRetrieveLevel=level)) == level.strip().upper()


@pytest.mark.parametrize(
    ("model", "ds", "message"),
    [
        (STUDY_ROOT_MOVE, identifier(QueryRetrieveLevel="PATIENT"), "Study Root"),
        (STUDY_ROOT_MOVE, identifier(QueryRetrieveLevel="FRAME"), "Study Root"),
        (STUDY_ROOT_MOVE, identifier(PatientID="X"), "QueryRetrieveLevel"),
        ("1.2.840.10008.5.1.4.1.2.3.1", identifier(QueryRetrieveLevel="STUDY"), "not supported"),
    ],
)
def test_bad_levels_are_refused(model: str, ds: Dataset, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        query_level(model, ds)


def test_retrieve_keys_down_to_the_level() -> None:
    keys = retrieve_keys(
        STUDY_ROOT_MOVE,
        identifier(
            QueryRetrieveLevel="SERIES",
            StudyInstanceUID="1.2.3",
            SeriesInstanceUID=["1.2.3.4", "1.2.3.5", "1.2.3.4"],
            SOPInstanceUID="1.2.3.4.5",  # below the level: ignored
        ),
    )
    assert keys == RetrieveKeys(
        level="SERIES", study_uids=("1.2.3",), series_uids=("1.2.3.4", "1.2.3.5")
    )


def test_patient_level_retrieve() -> None:
    keys = retrieve_keys(
        PATIENT_ROOT_MOVE,
        identifier(QueryRetrieveLevel="PATIENT", PatientID="P1", IssuerOfPatientID="H1"),
    )
    assert keys == RetrieveKeys(level="PATIENT", patient_id="P1", issuer_of_patient_id="H1")


@pytest.mark.parametrize(
    ("ds", "message"),
    [
        (identifier(QueryRetrieveLevel="STUDY"), "needs StudyInstanceUID"),
        (identifier(QueryRetrieveLevel="IMAGE", StudyInstanceUID="1.2"), "needs SOPInstanceUID"),
        (identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.x"), "not a valid UID"),
        (identifier(QueryRetrieveLevel="PATIENT", PatientID="P*"), "without wildcards"),
        (identifier(QueryRetrieveLevel="PATIENT", PatientID=""), "needs PatientID"),
    ],
)
def test_bad_retrieve_identifiers(ds: Dataset, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        retrieve_keys(PATIENT_ROOT_MOVE, ds)


def test_patient_keys_become_study_level_keys() -> None:
    keys = patient_search_identifier(
        identifier(
            QueryRetrieveLevel="PATIENT",
            SpecificCharacterSet="ISO_IR 100",
            PatientID="P*",
            PatientName="",
            NumberOfPatientRelatedStudies="",
            StudyDate="",  # another level, but empty: answered empty
        )
    )
    assert [e.keyword for e in keys] == ["PatientName", "PatientID"]


@pytest.mark.parametrize(
    "ds",
    [
        identifier(QueryRetrieveLevel="PATIENT", StudyDate="20240101"),
        identifier(QueryRetrieveLevel="PATIENT", NumberOfPatientRelatedStudies="3"),
    ],
)
def test_patient_level_refuses_other_matching_keys(ds: Dataset) -> None:
    with pytest.raises(InvalidRequest):
        patient_search_identifier(ds)


def test_find_response_holds_the_requested_keys_only() -> None:
    request = identifier(
        QueryRetrieveLevel="STUDY",
        StudyInstanceUID="",
        PatientName="",
        StudyDescription="",
        NumberOfStudyRelatedInstances="",
    )
    match = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Hans"}]},
        "00100020": {"vr": "LO", "Value": ["P1"]},  # not asked for
        "00201208": {"vr": "IS", "Value": [12]},
        "00081030": {"vr": "LO"},  # the archive has no value
    }
    out = find_response(request, match, "STUDY", "VNA")
    assert out.StudyInstanceUID == "1.2.3"
    assert str(out.PatientName) == "Müller^Hans"
    assert out.NumberOfStudyRelatedInstances == 12
    assert out.StudyDescription in (None, "")
    assert "PatientID" not in out
    assert out.QueryRetrieveLevel == "STUDY"
    assert out.RetrieveAETitle == "VNA"
    assert out.SpecificCharacterSet == "ISO_IR 192"  # UTF-8, for the umlaut


def test_find_response_always_carries_the_unique_key_and_no_charset_for_ascii() -> None:
    request = identifier(QueryRetrieveLevel="SERIES", Modality="CT")
    match = {
        "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
    }
    out = find_response(request, match, "SERIES", "VNA")
    assert out.SeriesInstanceUID == "1.2.3.4"
    assert "SpecificCharacterSet" not in out


def test_error_comment_is_short_plain_ascii() -> None:
    text = error_comment("naïve\\path " + "x" * 100)
    assert len(text) == 64
    assert text.isascii() and "\\" not in text
    assert text.endswith("...")
