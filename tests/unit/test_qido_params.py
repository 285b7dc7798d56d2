"""QIDO-RS query parameters and C-FIND identifiers as one Query (PS3.18 8.3.4, PS3.4 C.2.2.2)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from vna.catalog.search import like_pattern
from vna.dicom.qido_params import (
    Match,
    MatchKind,
    Query,
    attribute_level,
    parse_qido,
    query_from_identifier,
    range_key,
)
from vna.errors import InvalidRequest

UID1 = "1.2.826.0.1.3680043.8.498.1"
UID2 = "1.2.826.0.1.3680043.8.498.2"
UNIVERSAL, SINGLE, LIST = MatchKind.UNIVERSAL, MatchKind.SINGLE, MatchKind.LIST
WILDCARD, RANGE = MatchKind.WILDCARD, MatchKind.RANGE
ADT = "AcquisitionDateTime"


def one(level: str, name: str, value: str) -> Match:
    query = parse_qido(level, [(name, value)])
    (match,) = query.matches.values()
    return match


# --- matching kinds ------------------------------------------------------------------------

MATCHES = [
    # level, name, value, tag, kind, values, low, high
    ("study", "PatientID", "12345", "00100020", SINGLE, ("12345",), "", ""),
    ("study", "00100020", " 12345 ", "00100020", SINGLE, ("12345",), "", ""),
    ("study", "0020000d", UID1, "0020000D", SINGLE, (UID1,), "", ""),
    ("study", "PatientName", "Doe*", "00100010", WILDCARD, ("Doe*",), "", ""),
    ("study", "PatientName", "D?e^J*", "00100010", WILDCARD, ("D?e^J*",), "", ""),
    ("study", "PatientName", "Doe, John", "00100010", SINGLE, ("Doe, John",), "", ""),
    ("study", "PatientName", "*", "00100010", UNIVERSAL, (), "", ""),
    ("study", "PatientID", "", "00100020", UNIVERSAL, (), "", ""),
    ("study", "StudyDate", "20200101", "00080020", SINGLE, ("20200101",), "", ""),
    ("study", "StudyDate", "20200101-20201231", "00080020", RANGE, (), "20200101", "20201231"),
    ("study", "StudyDate", "-20201231", "00080020", RANGE, (), "", "20201231"),
    ("study", "StudyDate", "20200101-", "00080020", RANGE, (), "20200101", ""),
    ("study", "StudyTime", "1000-1230", "00080030", RANGE, (), "1000", "1230"),
    ("study", "StudyTime", "10:00-12:30:15", "00080030", RANGE, (), "1000", "123015"),
    ("study", "StudyTime", "101500.123", "00080030", SINGLE, ("101500.123",), "", ""),
    ("study", "StudyInstanceUID", f"{UID1},{UID2}", "0020000D", LIST, (UID1, UID2), "", ""),
    ("study", "StudyInstanceUID", f"{UID1}\\{UID2}", "0020000D", LIST, (UID1, UID2), "", ""),
    ("study", "StudyInstanceUID", f"{UID1},{UID1}", "0020000D", SINGLE, (UID1,), "", ""),
    ("study", "ModalitiesInStudy", "CT,MR", "00080061", LIST, ("CT", "MR"), "", ""),
    ("study", "ModalitiesInStudy", "CT\\MR", "00080061", LIST, ("CT", "MR"), "", ""),
    ("study", "ModalitiesInStudy", "C*", "00080061", WILDCARD, ("C*",), "", ""),
    ("study", "PatientAge", "052Y", "00101010", SINGLE, ("052Y",), "", ""),
    ("series", "Modality", "CT", "00080060", SINGLE, ("CT",), "", ""),
    ("series", "SeriesNumber", "+3", "00200011", SINGLE, ("+3",), "", ""),
    ("series", "PatientID", "12345", "00100020", SINGLE, ("12345",), "", ""),
    ("instance", "SliceThickness", "2.5", "00180050", SINGLE, ("2.5",), "", ""),
    ("instance", ADT, "20200101120000-0500", "0008002A", SINGLE, ("20200101120000-0500",), "", ""),
    ("instance", ADT, "2020-20210630", "0008002A", RANGE, (), "2020", "20210630"),
    ("instance", ADT, "20200101+0100-", "0008002A", RANGE, (), "20200101+0100", ""),
    # A universal key may name any attribute, even one below the level: it is only returned.
    ("study", "SOPInstanceUID", "", "00080018", UNIVERSAL, (), "", ""),
    ("study", "NumberOfStudyRelatedInstances", "", "00201208", UNIVERSAL, (), "", ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("level", "name", "value", "tag", "kind", "values", "low", "high"), MATCHES
)
def test_matching_kinds(
    level: str,
    name: str,
    value: str,
    tag: str,
    kind: MatchKind,
    values: tuple[str, ...],
    low: str,
    high: str,
) -> None:
    match = one(level, name, value)
    assert (match.tag, match.kind, match.values, match.low, match.high) == (
        tag,
        kind,
        values,
        low,
        high,
    )


def test_keyword_and_tag_name_the_same_attribute() -> None:
    by_keyword = one("study", "IssuerOfPatientID", "HOSP1")
    by_tag = one("study", "00100021", "HOSP1")
    assert by_keyword == by_tag
    assert (by_tag.keyword, by_tag.vr) == ("IssuerOfPatientID", "LO")


def test_repeated_uid_keys_widen_the_list() -> None:
    query = parse_qido("study", [("StudyInstanceUID", UID1), ("0020000D", f"{UID2},{UID1}")])
    assert query.matches["0020000D"].kind is MatchKind.LIST
    assert query.matches["0020000D"].values == (UID1, UID2)


# --- the other parameters ------------------------------------------------------------------


def test_paging_includes_and_fuzzy() -> None:
    query = parse_qido(
        "series",
        [
            ("includefield", "PatientAge,00080080"),
            ("includefield", "00091001"),  # private: returned if present, never matched
            ("includefield", "BodyPartExamined, "),
            ("limit", "25"),
            ("offset", "50"),
            ("fuzzymatching", "TRUE"),
            ("accept", "application/dicom+json"),
        ],
        study_uid=UID1,
    )
    assert query.include_fields == ("00101010", "00080080", "00091001", "00180015")
    assert not query.include_all
    assert (query.limit, query.offset) == (25, 50)
    assert query.fuzzy_matching_requested
    assert query.study_uid == UID1 and query.series_uid is None
    assert query.matches == {}


def test_defaults() -> None:
    query = parse_qido("study", [])
    assert query == Query(level="study")
    assert (query.limit, query.offset, query.include_all) == (None, 0, False)
    assert not query.fuzzy_matching_requested


def test_includefield_all() -> None:
    assert parse_qido("instance", [("includefield", "all")]).include_all
    assert parse_qido("instance", [("includefield", "PatientAge,all")]).include_all


def test_returned_tags_are_includes_then_keys() -> None:
    query = parse_qido("study", [("PatientID", "1"), ("includefield", "PatientAge")])
    assert query.returned_tags == ("00101010", "00100020")


def test_path_constraints() -> None:
    query = parse_qido("instance", [], study_uid=UID1, series_uid=UID2)
    assert (query.study_uid, query.series_uid) == (UID1, UID2)


# --- refusals ------------------------------------------------------------------------------

ERRORS = [
    # level, params, words the message must contain
    ("study", [("Foo", "1")], ["'Foo'", "unknown attribute"]),
    ("study", [("patientid", "1")], ["'patientid'", "PatientID"]),
    ("study", [("Patient ID", "1")], ["'Patient ID'"]),
    ("study", [("", "1")], ["''"]),
    ("study", [("00091001", "x")], ["'00091001'", "not in the DICOM dictionary"]),
    ("study", [("ReferencedSeriesSequence.SeriesInstanceUID", UID1)], ["sequence"]),
    ("study", [("StudyDate", "2020-01-01")], ["'StudyDate'", "2020-01-01"]),
    ("study", [("StudyDate", "20201301")], ["'StudyDate'", "20201301"]),
    ("study", [("StudyDate", "00000101")], ["'StudyDate'"]),
    ("study", [("StudyDate", "20201231-20200101")], ["'StudyDate'", "ends before"]),
    ("study", [("StudyDate", "-")], ["'StudyDate'"]),
    ("study", [("StudyDate", "2020*")], ["'StudyDate'"]),
    ("study", [("StudyTime", "2500")], ["'StudyTime'"]),
    ("study", [("StudyInstanceUID", "1.2.abc")], ["'StudyInstanceUID'", "UID"]),
    ("study", [("StudyInstanceUID", "1.2.*")], ["'StudyInstanceUID'", "UID"]),
    ("study", [("StudyInstanceUID", f"{UID1},,{UID2}")], ["'StudyInstanceUID'", "empty"]),
    ("study", [("PatientID", "1\\2")], ["'PatientID'"]),
    ("study", [("PatientID", "a\x00b")], ["'PatientID'", "NUL"]),
    ("study", [("PatientID", "\udcff")], ["'PatientID'"]),
    ("study", [("PatientID", "1"), ("PatientID", "2")], ["'PatientID'", "more than once"]),
    ("study", [("ModalitiesInStudy", "C*,MR")], ["'ModalitiesInStudy'", "wildcard"]),
    ("study", [("PatientAge", "05*")], ["'PatientAge'", "wildcard"]),
    ("study", [("NumberOfStudyRelatedInstances", "4")], ["'NumberOfStudyRelatedInstances'"]),
    ("study", [("SOPInstanceUID", UID1)], ["'SOPInstanceUID'", "instance-level", "study-level"]),
    ("study", [("Modality", "CT")], ["'Modality'", "series-level"]),
    ("series", [("InstanceNumber", "1")], ["'InstanceNumber'", "instance-level"]),
    ("series", [("SeriesNumber", "one")], ["'SeriesNumber'", "integer"]),
    ("series", [("SeriesNumber", "1*")], ["'SeriesNumber'"]),
    ("instance", [("SliceThickness", "thin")], ["'SliceThickness'", "decimal"]),
    ("instance", [("SliceThickness", "1e99999")], ["'SliceThickness'"]),
    ("instance", [("PixelData", "abc")], ["'PixelData'", "not supported"]),
    ("instance", [("ReferencedSeriesSequence", "x")], ["'ReferencedSeriesSequence'"]),
    ("instance", [("AcquisitionDateTime", "2020-13")], ["'AcquisitionDateTime'"]),
    ("study", [("limit", "ten")], ["'limit'"]),
    ("study", [("limit", "-1")], ["'limit'"]),
    ("study", [("limit", "0")], ["'limit'", "positive"]),
    ("study", [("limit", "1.5")], ["'limit'"]),
    ("study", [("limit", "10"), ("limit", "20")], ["'limit'", "more than once"]),
    ("study", [("offset", "-5")], ["'offset'"]),
    ("study", [("offset", "1" * 40)], ["'offset'"]),
    ("study", [("fuzzymatching", "maybe")], ["'fuzzymatching'"]),
    ("study", [("includefield", "Bogus")], ["'includefield'", "'Bogus'", "unknown"]),
    ("study", [("includefield", "a.b")], ["'includefield'", "sequence"]),
]  # fmt: skip


@pytest.mark.parametrize(("level", "params", "words"), ERRORS)
def test_invalid_parameters_name_the_parameter(
    level: str, params: list[tuple[str, str]], words: list[str]
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_qido(level, params)
    message = str(caught.value)
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    ("level", "study", "series"),
    [
        ("study", UID1, None),
        ("series", UID1, UID2),
        ("instance", None, UID2),
        ("series", "../../etc", None),
        ("instance", UID1, "1.2.x"),
        ("patient", None, None),
    ],
)
def test_invalid_targets(level: str, study: str | None, series: str | None) -> None:
    with pytest.raises(InvalidRequest):
        parse_qido(level, [], study_uid=study, series_uid=series)


# --- C-FIND identifiers --------------------------------------------------------------------


def test_identifier_becomes_the_same_query() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "12345"
    ds.IssuerOfPatientID = "HOSP1"
    ds.PatientName = "DOE^*"
    ds.StudyDate = "20200101-20201231"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.StudyInstanceUID = ""
    ds.NumberOfStudyRelatedInstances = None
    ds.ProcedureCodeSequence = Sequence([Dataset()])
    query = query_from_identifier("STUDY", ds)
    same = parse_qido(
        "study",
        [
            ("PatientID", "12345"),
            ("IssuerOfPatientID", "HOSP1"),
            ("PatientName", "DOE^*"),
            ("StudyDate", "20200101-20201231"),
            ("ModalitiesInStudy", "CT\\MR"),
            ("StudyInstanceUID", ""),
            ("NumberOfStudyRelatedInstances", ""),
        ],
    )
    assert query.level == "study"
    for tag, match in same.matches.items():
        assert query.matches[tag] == match
    # Keys that are not matching keys are left out; a sequence is returned, not matched.
    assert "00080052" not in query.matches and "00080005" not in query.matches
    assert query.matches["00081032"].kind is MatchKind.UNIVERSAL


def test_identifier_levels_and_uid_lists() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = UID1
    ds.SeriesInstanceUID = [UID1, UID2]
    ds.SOPInstanceUID = ""
    query = query_from_identifier("IMAGE", ds)
    assert query.level == "instance"
    assert query.matches["0020000E"].kind is MatchKind.LIST
    assert query.matches["0020000D"].values == (UID1,)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_identifier_refusals_name_the_key() -> None:
    ds = Dataset()
    ds.StudyDate = "yesterday"
    with pytest.raises(InvalidRequest, match="StudyDate"):
        query_from_identifier("study", ds)
    ds = Dataset()
    ds.SOPInstanceUID = UID1
    with pytest.raises(InvalidRequest, match="SOPInstanceUID"):
        query_from_identifier("SERIES", ds)
    with pytest.raises(InvalidRequest, match="PATIENT"):
        query_from_identifier("PATIENT", Dataset())


# --- helpers shared with the catalogue -----------------------------------------------------


@pytest.mark.parametrize(
    ("vr", "value", "upper", "key"),
    [
        ("DA", "20200101", False, "20200101"),
        ("TM", "10", False, "100000000000"),
        ("TM", "10", True, "109999999999"),
        ("TM", "101530.5", False, "101530500000"),
        ("TM", "10:15", True, "101599999999"),
        ("DT", "2020", True, "20209999999999999999"),
        ("DT", "20200101120000-0500", False, "20200101120000000000"),
    ],
)
def test_range_keys(vr: str, value: str, upper: bool, key: str) -> None:
    assert range_key(vr, value, upper=upper) == key


@pytest.mark.parametrize(
    ("wildcard", "pattern"),
    [("Doe*", "Doe%"), ("D?e", "D_e"), ("100%*", "100\\%%"), ("a_b", "a\\_b"), ("a\\b", "a\\\\b")],
)
def test_like_pattern_escapes(wildcard: str, pattern: str) -> None:
    assert like_pattern(wildcard) == pattern


def test_attribute_levels() -> None:
    assert attribute_level("00100020") == "study"  # group 0010: patient, searched with studies
    assert attribute_level("00080061") == "study"
    assert attribute_level("00080060") == "series"
    assert attribute_level("00080018") == "instance"
    assert attribute_level("00280010") == "instance"


# --- properties ----------------------------------------------------------------------------

KEYWORDS = [
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesNumber",
    "InstanceNumber",
    "SliceThickness",
    "AcquisitionDateTime",
    "PatientAge",
    "ReferencedSeriesSequence",
    "PixelData",
    "NumberOfStudyRelatedSeries",
    "00100020",
    "0020000d",
    "00091001",
    "includefield",
    "limit",
    "offset",
    "fuzzymatching",
    "accept",
]
names = st.one_of(st.sampled_from(KEYWORDS), st.text(max_size=20))
values = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789-.:,\\*?^ +", max_size=30),
    st.sampled_from(["", "*", "all", "20200101-", "-", "1.2.3,1.2.4", "CT\\MR", "true"]),
)


@settings(max_examples=400, deadline=None)
@given(
    level=st.sampled_from(["study", "series", "instance"]),
    params=st.lists(st.tuples(names, values), max_size=6),
)
def test_any_parameters_parse_or_are_refused(level: str, params: list[tuple[str, str]]) -> None:
    try:
        query = parse_qido(level, params)
    except InvalidRequest as exc:
        assert str(exc)
        return
    assert query.level == level
    for tag, match in query.matches.items():
        assert match.tag == tag and len(tag) == 8
        if match.kind in (MatchKind.SINGLE, MatchKind.WILDCARD):
            assert len(match.values) == 1 and match.value
        if match.kind is MatchKind.LIST:
            assert len(match.values) >= 2
        if match.kind is MatchKind.RANGE:
            assert match.low or match.high
    assert query.limit is None or query.limit > 0
    assert query.offset >= 0


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of the invalid values
@settings(max_examples=200, deadline=None)
@given(
    keyword=st.sampled_from([k for k in KEYWORDS if k[0].isupper()]),
    value=values,
)
def test_any_identifier_builds_or_is_refused(keyword: str, value: str) -> None:
    ds = Dataset()
    try:
        setattr(ds, keyword, value)
    except Exception:
        return  # pydicom refuses the value itself; nothing reaches the query
    try:
        query_from_identifier("instance", ds)
    except InvalidRequest:
        pass


@settings(max_examples=200, deadline=None)
@given(low=st.dates(), high=st.dates())
def test_date_ranges_round_trip(low: dt.date, high: dt.date) -> None:
    lo, hi = (f"{d.year:04d}{d.month:02d}{d.day:02d}" for d in (low, high))
    text = f"{lo}-{hi}"
    if lo > hi:
        with pytest.raises(InvalidRequest):
            parse_qido("study", [("StudyDate", text)])
        return
    match = one("study", "StudyDate", text)
    assert (match.kind, match.low, match.high) == (MatchKind.RANGE, lo, hi)
