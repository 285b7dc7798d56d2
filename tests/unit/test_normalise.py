"""Normalisation per source profile (vna.dicom.normalise): tables of profile, input, result."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from tests.factory import ct_study, part10
from vna.config import DEFAULT_SOURCE, SourceSettings
from vna.dicom.coercion import CoercionRule, coercion_tag
from vna.dicom.normalise import COERCE, CORRECT, correct, normalise

NOW = dt.datetime(2024, 3, 1, 12, 30, 5, 123456, tzinfo=dt.UTC)
PLAIN = SourceSettings(name="H1")
H1 = SourceSettings(name="H1", issuer_of_patient_id="HOSP1")


def parsed(ds: Dataset) -> Dataset:
    """``ds`` as the pipeline sees it: written to Part 10 and read back with raw elements."""
    return pydicom.dcmread(io.BytesIO(part10(ds)), stop_before_pixels=True)


def reread(ds: Dataset) -> Dataset:
    """Encode the normalised header as the archive writes it, and decode it again."""
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    out = pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)
    out.file_meta = ds.file_meta
    return out


def instance(**values: Any) -> Dataset:
    ds = ct_study(series=1, slices=1, size=4)[0]
    for keyword, value in values.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return parsed(ds)


def modified(ds: Dataset) -> Dataset:
    """The Modified Attributes Sequence item of the newest Original Attributes item."""
    return ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]


# --- issuer of patient ID -----------------------------------------------------------------------

ISSUER_CASES = [
    # (profile, carried issuer, expected issuer, recorded original (None: nothing recorded))
    ("no issuer configured", PLAIN, None, None, None),
    ("assigned when absent", H1, None, "HOSP1", ""),
    ("carried one replaced", H1, "OTHER", "HOSP1", "OTHER"),
    ("same one kept", H1, "HOSP1", "HOSP1", None),
    ("trusted carried kept", replace(H1, trust_issuer=True), "OTHER", "OTHER", None),
    ("trusted but absent", replace(H1, trust_issuer=True), None, "HOSP1", ""),
]


@pytest.mark.parametrize(
    "profile,carried,expected,original",
    [c[1:] for c in ISSUER_CASES],
    ids=[c[0] for c in ISSUER_CASES],
)
def test_issuer_of_patient_id(
    profile: SourceSettings, carried: str | None, expected: str | None, original: str | None
) -> None:
    result = normalise(
        instance(IssuerOfPatientID=carried), profile, now=NOW, modifying_system="VNA"
    )
    out = reread(result.dataset)
    assert out.get("IssuerOfPatientID") == expected
    if original is None:
        assert not result.changed and "OriginalAttributesSequence" not in out
    else:
        assert result.changed
        assert modified(out).IssuerOfPatientID == original  # absent before: no value


def test_issuer_qualifiers_sequence_is_added_where_configured() -> None:
    profile = replace(
        H1, issuer_universal_entity_id="1.2.826.0.1.3680043.10.1", identifier_type_code="MR"
    )
    out = reread(normalise(instance(), profile, now=NOW, modifying_system="VNA").dataset)
    item = out.IssuerOfPatientIDQualifiersSequence[0]
    assert (item.UniversalEntityID, item.UniversalEntityIDType, item.IdentifierTypeCode) == (
        "1.2.826.0.1.3680043.10.1",
        "ISO",
        "MR",
    )
    # A second pass (a resend of the stored object) changes nothing.
    again = normalise(parsed(out), profile, now=NOW, modifying_system="VNA")
    assert not again.changed


# --- coercion rules -----------------------------------------------------------------------------

RULE_CASES = [
    # (rule, attribute, value before (None: absent), value after (None: absent), changed)
    ("set absent", CoercionRule("set", "InstitutionName", "H1"), None, "H1", True),
    ("set other", CoercionRule("set", "InstitutionName", "H1"), "X", "H1", True),
    ("set same", CoercionRule("set", "InstitutionName", "H1"), "H1", "H1", False),
    ("remove present", CoercionRule("remove", "InstitutionName"), "X", None, True),
    ("remove absent", CoercionRule("remove", "InstitutionName"), None, None, False),
    ("prefix", CoercionRule("prefix", "AccessionNumber", "H1-"), "A123", "H1-A123", True),
    ("prefix twice", CoercionRule("prefix", "AccessionNumber", "H1-"), "H1-A1", "H1-A1", False),
    ("prefix empty", CoercionRule("prefix", "AccessionNumber", "H1-"), "", "", False),
    ("prefix absent", CoercionRule("prefix", "AccessionNumber", "H1-"), None, None, False),
    ("map hit", CoercionRule("map", "Modality", map=(("CT", "OT"),)), "CT", "OT", True),
    ("map miss", CoercionRule("map", "Modality", map=(("MR", "OT"),)), "CT", "CT", False),
    ("by tag", CoercionRule("set", "00081010", "ST1"), None, "ST1", True),
]


@pytest.mark.parametrize(
    "rule,before,after,changed", [c[1:] for c in RULE_CASES], ids=[c[0] for c in RULE_CASES]
)
def test_coercion_rules(
    rule: CoercionRule, before: str | None, after: str | None, changed: bool
) -> None:
    tag = coercion_tag(rule.attribute)
    assert tag is not None
    keyword = pydicom.datadict.keyword_for_tag(tag)
    profile = replace(PLAIN, coerce=(rule,))
    result = normalise(instance(**{keyword: before}), profile, now=NOW, modifying_system="VNA")
    out = reread(result.dataset)
    assert out.get(keyword) == after
    assert result.changed is changed
    if changed:
        recorded = modified(out)
        assert keyword in recorded
        assert (recorded[keyword].value or None) == (before or None)
        assert result.warnings() and keyword in result.warnings()[0]


def test_rules_apply_in_order_and_each_attribute_is_recorded_once() -> None:
    profile = replace(
        H1,
        coerce=(
            CoercionRule("set", "AccessionNumber", "A9"),
            CoercionRule("prefix", "AccessionNumber", "H1-"),
        ),
    )
    result = normalise(instance(AccessionNumber="A1"), profile, now=NOW, modifying_system="VNA")
    out = reread(result.dataset)
    assert out.AccessionNumber == "H1-A9"
    assert modified(out).AccessionNumber == "A1"  # the value as received, not an intermediate
    assert len(out.OriginalAttributesSequence) == 1


# --- padding ------------------------------------------------------------------------------------


def raw_instance(keyword: str, raw: bytes) -> Dataset:
    """An instance whose ``keyword`` holds exactly these value bytes."""
    ds = ct_study(series=1, slices=1, size=4)[0]
    tag = coercion_tag(keyword)
    assert tag is not None
    vr = pydicom.datadict.dictionary_VR(tag)
    # Put the element in with pydicom, then patch the value bytes (pydicom would pad them).
    # The marker cannot occur in the factory's 12-bit pixel data.
    marker = ("9" if vr in ("DS", "IS") else "X") * len(raw)
    ds.add_new(tag, vr, marker)
    data = part10(ds)
    assert data.count(marker.encode()) == 1
    patched = data.replace(marker.encode(), raw)
    return pydicom.dcmread(io.BytesIO(patched), stop_before_pixels=True)


PADDING_CASES = [
    # (keyword, raw value bytes, value after, changed)
    ("PatientID", b"12345   ", "12345", True),
    ("PatientID", b"  1234", "1234", True),
    ("PatientID", b"12345 ", "12345", False),  # the one byte of even-length padding
    ("PatientID", b"123456", "123456", False),
    ("PatientName", b"DOE^JOHN    ", "DOE^JOHN", True),
    ("PatientName", b"DOE^JANE", "DOE^JANE", False),
    ("ImageType", b"ORIGINAL \\PRIMARY ", ["ORIGINAL", "PRIMARY"], True),
    ("StudyDescription", b" CT  ", "CT", True),
    # Not SH/LO/CS/AE/PN: left as sent.
    ("SliceThickness", b" 1.0", 1.0, False),
]


@pytest.mark.parametrize("keyword,raw,after,changed", PADDING_CASES)
def test_padding_is_trimmed(keyword: str, raw: bytes, after: Any, changed: bool) -> None:
    result = normalise(raw_instance(keyword, raw), PLAIN, now=NOW, modifying_system="VNA")
    out = reread(result.dataset)
    value = out[keyword].value
    assert (list(value) if isinstance(value, pydicom.multival.MultiValue) else value) == after
    assert result.changed is changed


def test_padding_is_left_alone_when_the_profile_says_so() -> None:
    ds = raw_instance("PatientID", b"12345   ")
    assert not normalise(
        ds, replace(PLAIN, trim_padding=False), now=NOW, modifying_system="V"
    ).changed


# --- character sets -----------------------------------------------------------------------------

CHARSET_FILES = sorted(Path(p).name for p in get_charset_files("chr*.dcm"))


def text_values(ds: Dataset) -> dict[str, str]:
    """Every text value, nested ones too, by path."""
    out: dict[str, str] = {}

    def walk(d: Dataset, prefix: str) -> None:
        for elem in d:
            if elem.tag in (0x00080005, 0x04000561):
                continue
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value):
                    walk(item, f"{prefix}{elem.keyword}[{i}].")
            elif elem.VR in ("PN", "LO", "SH", "ST", "LT", "UT", "UC"):
                out[prefix + elem.keyword] = str(elem.value)

    walk(ds, "")
    return out


@pytest.mark.parametrize("name", CHARSET_FILES)
def test_text_comes_back_in_utf8_with_the_same_decoded_values(name: str) -> None:
    path = get_charset_files(name)[0]
    received = pydicom.dcmread(path, stop_before_pixels=True)
    expected = text_values(pydicom.dcmread(path, stop_before_pixels=True))
    result = normalise(received, PLAIN, now=NOW, modifying_system="VNA")
    out = reread(result.dataset)
    assert out.SpecificCharacterSet == "ISO_IR 192"
    assert text_values(out) == expected
    if not result.changed:  # already UTF-8 throughout (chrX1)
        return
    # The originals, in their own character set, in Original Attributes Sequence.
    originals = modified(out)
    before = pydicom.dcmread(path, stop_before_pixels=True)
    for keyword in (c.attribute for c in result.changes):
        if keyword == "SpecificCharacterSet":
            continue
        assert text_values(Dataset({before[keyword].tag: originals[keyword]})) == text_values(
            Dataset({before[keyword].tag: before[keyword]})
        ), keyword
    if "SpecificCharacterSet" in before and before.SpecificCharacterSet != "ISO_IR 192":
        assert originals.SpecificCharacterSet == before.SpecificCharacterSet


def test_ascii_text_under_another_character_set_is_left_bit_exact() -> None:
    ds = instance(SpecificCharacterSet="ISO_IR 100")
    result = normalise(ds, PLAIN, now=NOW, modifying_system="VNA")
    assert not result.changed


def test_conversion_can_be_turned_off() -> None:
    path = get_charset_files("chrFren.dcm")[0]
    received = pydicom.dcmread(path, stop_before_pixels=True)
    profile = replace(PLAIN, convert_to_utf8=False)
    assert not normalise(received, profile, now=NOW, modifying_system="VNA").changed


def test_unknown_character_set_is_left_with_a_note() -> None:
    ds = raw_instance("InstitutionName", b"CAF\xc9")
    ds.SpecificCharacterSet = "ISO_IR 999"
    result = normalise(ds, PLAIN, now=NOW, modifying_system="VNA")
    assert not result.changed and "ISO_IR 999" in result.notes[0]


def test_a_non_ascii_coercion_switches_to_utf8_even_without_conversion() -> None:
    profile = replace(
        PLAIN, convert_to_utf8=False, coerce=(CoercionRule("set", "InstitutionName", "Hôpital"),)
    )
    out = reread(normalise(instance(), profile, now=NOW, modifying_system="VNA").dataset)
    assert out.SpecificCharacterSet == "ISO_IR 192" and out.InstitutionName == "Hôpital"


# --- Original Attributes Sequence ---------------------------------------------------------------


def test_original_attributes_item_per_ps3_3_c_12_1_1_9() -> None:
    result = normalise(instance(IssuerOfPatientID="OLD"), H1, now=NOW, modifying_system="VNA01")
    item = reread(result.dataset).OriginalAttributesSequence[0]
    assert item.ReasonForTheAttributeModification == COERCE
    assert item.ModifyingSystem == "VNA01"
    assert item.SourceOfPreviousValues == "H1"
    assert item.AttributeModificationDateTime == "20240301123005.123456+0000"
    assert len(item.ModifiedAttributesSequence) == 1
    assert item.ModifiedAttributesSequence[0].IssuerOfPatientID == "OLD"


def test_earlier_history_is_kept() -> None:
    earlier = Dataset()
    earlier.ReasonForTheAttributeModification = "CORRECT"
    earlier.ModifyingSystem = "RIS"
    earlier.AttributeModificationDateTime = "20200101000000"
    earlier.ModifiedAttributesSequence = Sequence([Dataset()])
    ds = instance(OriginalAttributesSequence=Sequence([earlier]))
    out = reread(normalise(ds, H1, now=NOW, modifying_system="VNA").dataset)
    assert [i.ModifyingSystem for i in out.OriginalAttributesSequence] == ["RIS", "VNA"]


def test_unchanged_header_is_the_same_object_untouched() -> None:
    ds = instance()
    result = normalise(ds, DEFAULT_SOURCE, now=NOW, modifying_system="VNA")
    assert result.dataset is ds and not result.changed and result.warnings() == ()


def test_correction_records_reason_correct() -> None:
    ds = instance(PatientName="DOE^JANE", PatientSex="F")
    result = correct(
        ds,
        {"PatientName": "DOE^JOANNA", "PatientSex": None, "PatientBirthDate": "19700102"},
        now=NOW,
        modifying_system="VNA",
    )
    out = reread(result.dataset)
    assert (out.PatientName, "PatientSex" in out, out.PatientBirthDate) == (
        "DOE^JOANNA",
        False,
        "19700102",
    )
    item = out.OriginalAttributesSequence[-1]
    assert item.ReasonForTheAttributeModification == CORRECT
    assert (
        item.ModifiedAttributesSequence[0].PatientName,
        item.ModifiedAttributesSequence[0].PatientSex,
    ) == ("DOE^JANE", "F")
