"""Pure parts of study corrections, QIDO-RS ``includelinked`` and Instance Availability:
which corrections DICOM can carry (PS3.5 6.2), which queries may follow patient links, and
the availability of a set of instances (PS3.4 C.4.1.1.3.2)."""

from __future__ import annotations

import datetime as dt

import pytest

from vna.dicom.corrections import check_study_values, study_date
from vna.dicom.qido_params import parse_qido
from vna.errors import InvalidRequest
from vna.storage.availability import least_available, tier_availability

# --- study corrections --------------------------------------------------------------------------

ACCEPTED = [
    ({"AccessionNumber": "A" * 16}, {"AccessionNumber": "A" * 16}),
    ({"AccessionNumber": " ACC1 "}, {"AccessionNumber": "ACC1"}),
    ({"StudyDescription": "CT ABDOMEN"}, {"StudyDescription": "CT ABDOMEN"}),
    ({"StudyDate": "20240229"}, {"StudyDate": "20240229"}),
    ({"StudyDate": ""}, {"StudyDate": ""}),  # Type 2: present, empty
    ({"StudyTime": "10"}, {"StudyTime": "10"}),
    ({"StudyTime": "235960.123456"}, {"StudyTime": "235960.123456"}),
    ({"ReferringPhysicianName": "JONES^ANN^^DR"}, {"ReferringPhysicianName": "JONES^ANN^^DR"}),
    ({"ReferringPhysicianName": "Yamada^Tarou=山田^太郎"}, None),
    ({"StudyID": "S1"}, {"StudyID": "S1"}),
]


@pytest.mark.parametrize(("values", "expected"), ACCEPTED)
def test_corrections_dicom_can_carry_are_accepted(
    values: dict[str, str], expected: dict[str, str] | None
) -> None:
    assert check_study_values(values) == (expected or values)


REFUSED = [
    ({}, "nothing"),
    ({"PatientName": "X"}, "PatientName"),
    ({"SeriesDescription": "X"}, "updatable: AccessionNumber"),
    ({"AccessionNumber": "A" * 17}, "16"),
    ({"StudyID": "S" * 17}, "16"),
    ({"StudyDescription": "D" * 65}, "64"),
    ({"StudyDescription": "a\\b"}, "backslash"),
    ({"StudyDescription": "a\nb"}, "control"),
    ({"StudyDate": "20230229"}, "StudyDate"),
    ({"StudyDate": "2024-01-01"}, "StudyDate"),
    ({"StudyDate": "00000101"}, "StudyDate"),
    ({"StudyTime": "24"}, "StudyTime"),
    ({"StudyTime": "10:15"}, "StudyTime"),
    ({"ReferringPhysicianName": "A=B=C=D"}, "component groups"),
    ({"ReferringPhysicianName": "A^B^C^D^E^F"}, "five components"),
    ({"ReferringPhysicianName": "X" * 65}, "64"),
]


@pytest.mark.parametrize(("values", "message"), REFUSED)
def test_corrections_that_would_break_the_objects_are_refused(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        check_study_values(values)


def test_study_date_is_the_catalogue_column() -> None:
    assert study_date("20240116") == dt.date(2024, 1, 16)
    assert study_date("") is None


# --- includelinked ------------------------------------------------------------------------------


def test_includelinked_is_a_flag_of_the_query() -> None:
    query = parse_qido("study", [("PatientID", "A-1"), ("includelinked", "TRUE")])
    assert query.include_linked
    assert not parse_qido("study", [("PatientID", "A-1")]).include_linked
    assert not parse_qido("study", [("PatientID", "A*"), ("includelinked", "false")]).include_linked
    with_issuer = [("PatientID", "A-1"), ("IssuerOfPatientID", "H1"), ("includelinked", "true")]
    assert parse_qido("series", with_issuer).include_linked


@pytest.mark.parametrize(
    "params",
    [
        [("includelinked", "true")],
        [("PatientID", ""), ("includelinked", "true")],
        [("PatientID", "A*"), ("includelinked", "true")],
        [("PatientID", "A-1"), ("IssuerOfPatientID", "H*"), ("includelinked", "true")],
        [("PatientID", "A-1"), ("includelinked", "1")],
        [("PatientID", "A-1"), ("includelinked", "true"), ("includelinked", "true")],
    ],
)
def test_includelinked_needs_one_identity(params: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidRequest, match="includelinked"):
        parse_qido("study", params)


# --- Instance Availability ----------------------------------------------------------------------

GLACIER = frozenset({"cold"})  # S3 with cold = GLACIER or DEEP_ARCHIVE
NONE_OFFLINE: frozenset[str] = frozenset()  # filesystem store, S3 with cold = GLACIER_IR

AVAILABILITY = [
    ([], NONE_OFFLINE, "ONLINE"),  # every instance restored (or none at all)
    (["hot"], GLACIER, "ONLINE"),
    (["hot", "warm"], NONE_OFFLINE, "ONLINE"),
    (["cold"], NONE_OFFLINE, "NEARLINE"),
    (["hot", "cold"], NONE_OFFLINE, "NEARLINE"),
    (["cold"], GLACIER, "OFFLINE"),
    (["hot", "warm", "cold"], GLACIER, "OFFLINE"),
    (["warm"], frozenset({"warm", "cold"}), "OFFLINE"),
]


@pytest.mark.parametrize(("tiers", "offline", "expected"), AVAILABILITY)
def test_the_least_available_instance_decides(
    tiers: list[str], offline: frozenset[str], expected: str
) -> None:
    assert least_available(tiers, offline) == expected


def test_tier_availability() -> None:
    assert [tier_availability(t, GLACIER) for t in ("hot", "warm", "cold")] == [
        "ONLINE",
        "ONLINE",
        "OFFLINE",
    ]
