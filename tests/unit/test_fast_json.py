"""``extract_header`` and ``dicom_json`` read raw elements themselves (vna.dicom.fast_json): they
must give exactly what they gave when pydicom converted every element, and a header ingest
changed must still be written as it was.

The oracle is the previous implementation, kept here: ``Dataset.get`` per keyword for the
header, ``DataElement.to_json_dict`` per element for the JSON.  Each case reads the file into
separate data sets for the oracle and for the code under test (pydicom's conversion changes the
data set it reads), and compares results leaf for leaf, types included, or the exception raised.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.hooks import hooks, raw_element_value, raw_element_value_fix_separator
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from tests.factory import ct_study, part10
from vna.config import DEFAULT_SOURCE, SourceSettings
from vna.dicom import fast_json
from vna.dicom.normalise import normalise
from vna.dicom.parse import (
    _BULK_VRS,
    _PIXEL_DATA_TAGS,
    BULK_THRESHOLD,
    InstanceHeader,
    _as_parsed,
    dicom_json,
    extract_header,
    parse_da,
    read_dataset,
)
from vna.dicom.rewrite import write_with_header
from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidInstance, SopClassMismatch

# pydicom warns about the odd values these tests are made of.
pytestmark = pytest.mark.filterwarnings("ignore")


# --- the oracle: the implementation before fast_json ---------------------------------------------


def reference_header(ds: Dataset) -> InstanceHeader:
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise InvalidInstance("no File Meta Information (PS3.10 7.1): transfer syntax unknown")
    try:
        sop_class = _ref_uid(ds, "SOPClassUID")
        sop_instance = _ref_uid(ds, "SOPInstanceUID")
        study_uid = _ref_uid(ds, "StudyInstanceUID")
        series_uid = _ref_uid(ds, "SeriesInstanceUID")
        ts = str(meta.TransferSyntaxUID)
        media_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
        if media_class and media_class != sop_class:
            raise SopClassMismatch(
                f"MediaStorageSOPClassUID {media_class} differs from SOPClassUID {sop_class}"
            )
        return InstanceHeader(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            study_uid=study_uid,
            series_uid=series_uid,
            transfer_syntax=ts,
            patient_id=_ref_text(ds, "PatientID"),
            issuer_of_patient_id=_ref_text(ds, "IssuerOfPatientID"),
            patient_name=_ref_text(ds, "PatientName"),
            patient_birth_date=_ref_text(ds, "PatientBirthDate"),
            patient_sex=_ref_text(ds, "PatientSex"),
            study_date=parse_da(_ref_text(ds, "StudyDate")),
            study_time=_ref_text(ds, "StudyTime"),
            accession_number=_ref_text(ds, "AccessionNumber"),
            study_id=_ref_text(ds, "StudyID"),
            study_description=_ref_text(ds, "StudyDescription"),
            referring_physician=_ref_text(ds, "ReferringPhysicianName"),
            modality=_ref_text(ds, "Modality"),
            series_number=_ref_int(ds, "SeriesNumber"),
            series_description=_ref_text(ds, "SeriesDescription"),
            body_part=_ref_text(ds, "BodyPartExamined"),
            instance_number=_ref_int(ds, "InstanceNumber"),
            rows=_ref_int(ds, "Rows"),
            columns=_ref_int(ds, "Columns"),
            number_of_frames=_ref_int(ds, "NumberOfFrames"),
            has_pixel_data=bool(getattr(ds, "_vna_has_pixel_data", False)),
        )
    except InvalidInstance:
        raise
    except Exception as exc:
        raise InvalidInstance(f"cannot read DICOM attributes: {_first_line(exc)}") from exc


def reference_json(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        for elem in ds:
            tag = int(elem.tag)
            if tag in _PIXEL_DATA_TAGS:
                continue
            if elem.VR in _BULK_VRS:
                value = elem.value
                if isinstance(value, bytes | bytearray) and len(value) > BULK_THRESHOLD:
                    continue
            out[f"{tag:08X}"] = elem.to_json_dict(
                bulk_data_element_handler=None, bulk_data_threshold=BULK_THRESHOLD
            )
    except Exception as exc:
        raise InvalidInstance(f"cannot convert header to DICOM JSON: {_first_line(exc)}") from exc
    return out


def _ref_uid(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        raise InvalidInstance(f"required attribute {keyword} is missing")
    text = str(value).strip().rstrip("\x00")
    if not is_valid_uid(text):
        raise InvalidInstance(f"{keyword} is not a valid UID: {text[:80]!r}")
    return text


def _ref_text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip().rstrip("\x00")


def _ref_int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0]
        return int(value)
    except (TypeError, ValueError):
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# --- comparing ---------------------------------------------------------------------------------


def _leaves(obj: Any) -> Any:
    """A comparable form that tells types apart (1 from 1.0 from "1", NaN equal to itself).

    A str subclass counts as str: pydicom's UID values come out as plain strings now, and
    both serialise alike."""
    if isinstance(obj, dict):
        return ("dict", [(_leaves(k), _leaves(v)) for k, v in obj.items()])
    if isinstance(obj, list):
        return ("list", [_leaves(v) for v in obj])
    if isinstance(obj, str):
        return ("str", str(obj))
    if isinstance(obj, float):
        return ("float", "nan" if math.isnan(obj) else float(obj).hex())
    return (type(obj).__name__, obj)


def _outcome(fn: Callable[[Dataset], Any], ds: Dataset) -> tuple[Any, ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = fn(ds)
        except Exception as exc:
            return ("raised", type(exc).__name__, str(exc))
    if isinstance(result, InstanceHeader):
        return ("header", _leaves(result.__dict__))
    return ("json", _leaves(result), json.dumps(result, default=repr))


def assert_same(
    read: Callable[[], Dataset], *, json_alone: bool = True
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The oracle and the code under test on fresh copies of one data set, in the pipeline's
    order (header, then JSON), and the JSON alone; returns the oracle's outcomes."""
    before = read()
    header = _outcome(reference_header, before)
    doc = _outcome(reference_json, before)
    after = read()
    assert _outcome(extract_header, after) == header
    assert _outcome(dicom_json, after) == doc
    if json_alone:
        assert _outcome(dicom_json, read()) == doc
    return header, doc


def _reader(path: Path) -> Callable[[], Dataset] | None:
    """How the pipeline reads ``path``; failing that, how far pydicom gets."""
    for read in (
        lambda: read_dataset(path),
        lambda: read_dataset(path, check_complete=False),
        lambda: pydicom.dcmread(path, stop_before_pixels=True, force=True),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read()
        except Exception:
            continue
        return read
    return None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fast_json") / "upload.dcm"


# --- pydicom's corpus ----------------------------------------------------------------------------

CORPUS = sorted(
    {Path(p) for p in [*get_testdata_files(), *get_charset_files()] if not p.endswith(".txt")}
)


def test_corpus_is_there() -> None:
    assert len(CORPUS) > 150
    names = {p.name for p in CORPUS}
    assert {"chrJapMulti.dcm", "chrSQEncoding.dcm", "rtplan.dcm", "CT_small.dcm"} <= names


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_pydicom_corpus_gives_the_same_results(path: Path) -> None:
    read = _reader(path)
    if read is None:
        pytest.skip("pydicom cannot read it at all")
    assert_same(read)


def test_the_corpus_mostly_takes_the_fast_path() -> None:
    """The comparison above is only worth something if the fast path answers for most
    elements (the rest go to pydicom and match trivially)."""
    fast = slow = 0
    for path in CORPUS:
        read = _reader(path)
        if read is None:
            continue
        ds = read()
        reader = fast_json.Reader(ds)
        for raw in ds._dict.values():
            if isinstance(raw, pydicom.dataelem.RawDataElement):
                if reader.element_json(raw, BULK_THRESHOLD) is None:
                    slow += 1
                else:
                    fast += 1
    assert fast > 5 * slow, (fast, slow)


# --- instances made here: CT slices, character sets, sequences ----------------------------------


def _file(ds: Dataset, tmp_path: Path, name: str = "x.dcm", **save: Any) -> Path:
    path = tmp_path / name
    if save:
        ds.save_as(path, **save)
    else:
        path.write_bytes(part10(ds))
    return path


def _ct(**kwargs: Any) -> Dataset:
    return ct_study(series=1, slices=1, size=16, **kwargs)[0]


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_factory_ct_slice(tmp_path: Path, ts: str) -> None:
    ds = _ct(issuer="HOSP")
    ds.file_meta.TransferSyntaxUID = UID(ts)
    path = _file(ds, tmp_path, enforce_file_format=True)
    header, doc = assert_same(lambda: read_dataset(path))
    assert header[0] == "header" and doc[0] == "json"
    assert json.loads(doc[2])["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]}


def test_factory_ct_slice_512(tmp_path: Path) -> None:
    ds = ct_study(series=1, slices=1, size=512)[0]
    path = _file(ds, tmp_path)
    header, doc = assert_same(lambda: read_dataset(path))
    assert header[0] == "header" and "7FE00010" not in doc[2]


# (Specific Character Set, patient name, a text value): the names pydicom's charset tests use.
CHARSETS = [
    ("", "Doe^John", "plain"),
    ("ISO_IR 6", "Doe^John", "plain"),
    ("ISO_IR 100", "Buc^Jérôme", "Größe"),
    ("ISO_IR 192", "Wang^XiaoDong=王^小東=", "中文 text ✓"),
    ("ISO_IR 192", "Yamada^Tarou=山田^太郎=やまだ^たろう", "日本語"),
    ("ISO_IR 192", "=Ideographic^Only", "x"),
    ("ISO_IR 144", "Люкceмбypг", "Русский"),
    ("ISO_IR 126", "Διονυσιος", "Ελληνικά"),
    ("ISO_IR 138", "שרון^דבורה", "עברית"),
    ("ISO_IR 127", "قباني^لنزار", "عربي"),
    ("ISO 2022 IR 100", "Buc^Jérôme", "Größe"),
    ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう", "日本語"),
    ("ISO 2022 IR 6\\ISO 2022 IR 149", "Hong^Gildong=洪^吉洞=홍^길동", "한국어"),
    ("GB18030", "Wang^XiaoDong=王^小东=", "中文"),
    ("ISO_IR 13", "ﾔﾏﾀﾞ^ﾀﾛｳ", "ｶﾀｶﾅ"),
]


def _charset_instance(charset: str, name: str, text: str) -> Dataset:
    ds = _ct()
    if charset:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    ds.PatientName = name
    ds.OtherPatientNames = [name, "Second^Name"]
    ds.StudyDescription = text
    ds.InstitutionAddress = f"{text}\\with a backslash"
    ds.ImageComments = f"  {text} \r\n second line  "
    ds.PatientComments = text
    ds.ReferringPhysicianName = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = generate_uid()
    item.ReferencedFrameNumber = [1, 2]
    nested = Dataset()
    nested.CodeValue = "T-D3000"
    nested.CodeMeaning = text
    nested.CodingSchemeDesignator = "SRT"
    item.PurposeOfReferenceCodeSequence = Sequence([nested])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds.ProcedureCodeSequence = Sequence()
    own = Dataset()  # an item declaring its own character set (PS3.5 7.5.3)
    own.SpecificCharacterSet = "ISO_IR 100"
    own.PatientName = "Buc^Jérôme"
    ds.OtherPatientIDsSequence = Sequence([own])
    return ds


def _charset_instances() -> Iterator[Dataset]:
    for charset, name, text in CHARSETS:
        yield _charset_instance(charset, name, text)
        implicit = _charset_instance(charset, name, text)
        implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        yield implicit


@pytest.mark.parametrize(
    ("charset", "name", "text"), CHARSETS, ids=[c[0] or "none" for c in CHARSETS]
)
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_character_sets_and_sequences(
    tmp_path: Path, charset: str, name: str, text: str, implicit: bool
) -> None:
    ds = _charset_instance(charset, name, text)
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = _file(ds, tmp_path, enforce_file_format=True)
    header, doc = assert_same(lambda: read_dataset(path))
    assert header[0] == "header" and doc[0] == "json"


SOURCES = [
    DEFAULT_SOURCE,
    SourceSettings(name="CONVERT"),  # trim padding, convert to UTF-8
    SourceSettings(
        name="ISSUER",
        issuer_of_patient_id="HOSP",
        issuer_universal_entity_id="1.2.3",
        identifier_type_code="MR",
    ),
]


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
@pytest.mark.parametrize(
    ("charset", "name", "text"), CHARSETS, ids=[c[0] or "none" for c in CHARSETS]
)
def test_after_normalisation(
    tmp_path: Path, source: SourceSettings, charset: str, name: str, text: str
) -> None:
    """As the pipeline runs them: on the normalised header (elements it changed are
    DataElements, the others still raw)."""
    ds = _ct()
    if charset:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    ds.PatientName = name
    ds.PatientID = "  PAT 7  "
    ds.StudyDescription = text
    path = _file(ds, tmp_path)
    now = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)

    def read() -> Dataset:
        ds = read_dataset(path)
        normalise(ds, source, now=now, modifying_system="VNA")
        return ds

    header, doc = assert_same(read)
    assert header[0] == "header" and doc[0] == "json"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_a_data_set_as_parsed_stays_as_parsed(path: Path) -> None:
    """Reading raw leaves the parsed elements in place (what pydicom converts meanwhile is put
    back), so that dicom_json after extract_header still reads them raw."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read_dataset(path)
    except InvalidInstance:
        pytest.skip("not an instance read_dataset accepts")
    with _as_parsed(ds) as fast:
        assert fast
    parsed = dict(ds._dict)
    _outcome(extract_header, ds)
    _outcome(dicom_json, ds)
    assert list(ds._dict) == list(parsed)
    assert all(ds._dict[tag] is elem for tag, elem in parsed.items())


def test_only_a_data_set_as_parsed_is_read_raw(tmp_path: Path) -> None:
    path = _file(_charset_instance("ISO_IR 100", "Buc^Jérôme", "Größe"), tmp_path)
    now = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    ds = read_dataset(path)
    assert not normalise(ds, DEFAULT_SOURCE, now=now, modifying_system="VNA").changed
    with _as_parsed(ds) as fast:
        assert fast
    assert normalise(ds, SOURCES[2], now=now, modifying_system="VNA").changed
    with _as_parsed(ds) as fast:
        assert not fast
    ds = read_dataset(path)
    ds.PatientID = "OTHER"  # any change, recorded or not
    with _as_parsed(ds) as fast:
        assert not fast
    ds = read_dataset(path)
    del ds.StudyDescription
    with _as_parsed(ds) as fast:
        assert not fast
    with _as_parsed(pydicom.dcmread(path, stop_before_pixels=True)) as fast:
        assert not fast  # not from read_dataset: nothing to tell a change by


def _stored(
    path: Path, source: SourceSettings, read: tuple[Callable[..., Any], ...], scratch: Path
) -> Any:
    """What ingest stores for ``path`` from ``source``: the received file or, when the header
    was changed, the file rewrite.py writes (in ``scratch``: never beside pydicom's own test
    files, which the corpus lists) after ``read`` (extract_header and dicom_json, or the
    oracle's) has read the changed header."""
    ds = read_dataset(path)
    now = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    changed = normalise(ds, source, now=now, modifying_system="VNA").changed
    for fn in read:
        _outcome(fn, ds)
    if not changed:
        return path.read_bytes()
    out = scratch / "written.dcm"
    try:
        write_with_header(path, out, ds)
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))
    finally:
        written = out.read_bytes() if out.exists() else None
        out.unlink(missing_ok=True)
    return written


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_a_changed_header_is_written_as_before(tmp_path: Path, source: SourceSettings) -> None:
    """pydicom writes a raw element's bytes, and a converted element from its value: a header
    the archive changed must reach the writer converted as before, or the stored file (and its
    hash) would change, and some (implicit VR elements in a data set read as explicit) could
    not be written at all."""
    paths = [p for p in CORPUS if p.suffix == ".dcm"]
    for i, ds in enumerate(_charset_instances()):
        paths.append(_file(ds, tmp_path, f"made{i}.dcm"))
    compared = 0
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read_dataset(path)
        except InvalidInstance:
            continue
        before = _stored(path, source, (reference_header, reference_json), tmp_path)
        assert _stored(path, source, (extract_header, dicom_json), tmp_path) == before, path.name
        compared += 1
    assert compared > 100


def test_values_the_fast_path_leaves_to_pydicom(tmp_path: Path) -> None:
    """Odd values whose conversion pydicom decides (and may refuse): the same outcome."""
    ds = _ct()
    ds.add_new(0x00090010, "LO", "VNA TEST")
    ds.add_new(0x00091001, "UN", b"\x01\x02\x03")
    ds.add_new(0x00091002, "OB", bytes(BULK_THRESHOLD + 2))  # bulk data: left out
    ds.add_new(0x00091004, "OB", bytes(BULK_THRESHOLD))  # kept
    ds.add_new(0x00091003, "OW", b"\x00\x01" * 8)
    ds.add_new(0x00280106, "US", 0)  # US or SS in the dictionary
    ds.add_new(0x00281101, "SS", [0xF000, 0, 16])  # LUT descriptor: read back as -4096
    ds.add_new(0x00280009, "AT", [0x00181063, 0x00181065])
    ds.add_new(0x00189087, "FD", [1.5, float("nan")])
    ds.add_new(0x00089459, "FL", 25.0)
    ds.add_new(0x00720082, "SV", [-(2**40), 7])
    ds.add_new(0x0008040C, "UV", 2**63)
    ds.add_new(0x00081190, "UR", "http://example.com/a b  ")
    ds.add_new(0x00080119, "UC", "long\\code")
    ds.add_new(0x00400280, "ST", "a\\b")
    path = _file(ds, tmp_path)
    assert_same(lambda: read_dataset(path))


# --- data sets written byte by byte: any value in any VR ---------------------------------------

_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _element(tag: int, vr: str, value: bytes, *, implicit: bool, little: bool) -> bytes:
    e = "<" if little else ">"
    group, elem = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack(f"{e}HHL", group, elem, len(value)) + value
    if vr in _LONG_VRS:
        return struct.pack(f"{e}HH2sHL", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack(f"{e}HH2sH", group, elem, vr.encode(), len(value)) + value


def _sequence(
    tag: int, items: list[bytes], *, implicit: bool, little: bool, undefined: bool
) -> bytes:
    e = "<" if little else ">"
    body = b""
    for item in items:
        if undefined:
            body += struct.pack(f"{e}HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + item
            body += struct.pack(f"{e}HHL", 0xFFFE, 0xE00D, 0)
        else:
            body += struct.pack(f"{e}HHL", 0xFFFE, 0xE000, len(item)) + item
    if not undefined:
        return _element(tag, "SQ", body, implicit=implicit, little=little)
    head = (
        struct.pack(f"{e}HHL", tag >> 16, tag & 0xFFFF, 0xFFFFFFFF)
        if implicit
        else struct.pack(f"{e}HH2sHL", tag >> 16, tag & 0xFFFF, b"SQ", 0, 0xFFFFFFFF)
    )
    return head + body + struct.pack(f"{e}HHL", 0xFFFE, 0xE0DD, 0)


def _part10(body: bytes, ts: str, sop_class: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    meta.TransferSyntaxUID = UID(ts)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + buf.getvalue() + body


_ENCODINGS = [
    (False, True, ExplicitVRLittleEndian),
    (True, True, ImplicitVRLittleEndian),
    (False, False, ExplicitVRBigEndian),
]
_HEADER_CASES = [
    (keyword, vr, value)
    for keyword, vr in [
        ("PatientName", "PN"),
        ("PatientID", "LO"),
        ("PatientSex", "CS"),
        ("StudyDate", "DA"),
        ("StudyTime", "TM"),
        ("StudyID", "SH"),
        ("SeriesDescription", "LT"),
        ("PatientID", "UT"),
        ("PatientName", "LO"),
        ("Modality", "PN"),
        ("StudyDate", "UN"),
    ]
    for value in [
        b"",
        b" ",
        b"\x00",
        b"A\\B",
        b" A\\",
        b"=",
        b"A=B=C=",
        b"^\x00",
        b"\xe9t\xe9 ",
        b"\xc3\xa9t\xc3\xa9",
        b"\x1b$BF|K\\\x1b(B",
        b"20240131",
        b" 1999.12.31 ",
        b"A\tB\r\n ",
    ]
] + [
    (keyword, vr, value)
    for keyword, vr in [
        ("SeriesNumber", "IS"),
        ("NumberOfFrames", "IS"),
        ("Rows", "US"),
        ("Columns", "SS"),
        ("InstanceNumber", "SL"),
        ("Rows", "DS"),
        ("Rows", "UN"),
        ("SeriesNumber", "LO"),
    ]
    for value in [
        b"",
        b" ",
        b" \t",
        b"\x00\x00",
        b"7",
        b" 7 ",
        b"-0",
        b"7.0",
        b"7.5",
        b"1\\2",
        b"\\2",
        b"abc",
        b"1_0",
        b"99999999999999999999",
        b"\x01\x02\x03",
        b"\x01\x00\x02\x00",
    ]
]


@pytest.mark.parametrize(("keyword", "vr", "value"), _HEADER_CASES)
def test_header_values(scratch: Path, keyword: str, vr: str, value: bytes) -> None:
    uid = b"1.2.840.10008.5.1.4.1.1.2"
    top = {t: ("UI", uid) for t in (0x00080016, 0x00080018, 0x0020000D, 0x0020000E)}
    top[int(pydicom.datadict.tag_for_keyword(keyword))] = (vr, value)  # type: ignore[arg-type]
    # Text in the character sets the fast path decodes and in one it leaves to pydicom, numbers
    # in both byte orders.
    numeric = vr in ("US", "SS", "SL", "UN")
    for charset in (b"",) if numeric else (b"", b"ISO_IR 192", b"\\ISO 2022 IR 87"):
        for implicit, little, ts in _ENCODINGS if numeric else _ENCODINGS[:2]:
            top[0x00080005] = ("CS", charset)
            body = b"".join(
                _element(t, v, b, implicit=implicit, little=little)
                for t, (v, b) in sorted(top.items())
            )
            scratch.write_bytes(_part10(body, ts, uid.decode()))
            assert_same(lambda: read_dataset(scratch), json_alone=False)


# Bytes values are made of: digits, signs, padding, delimiters, an ISO 2022 escape, Latin-1 and
# UTF-8 letters, bytes invalid in UTF-8, whitespace pydicom strips in places and not in others.
_PIECES = [
    *[bytes([c]) for c in b"0123456789.+-eE \\=^AZaz\x00\t\r\n_"],
    b"\x1b$B",
    b"\x1b(B",
    b"\xe9",
    b"\xc3\xa9",
    b"\xe4\xb8\xad",
    b"\xff",
    b"\x80",
    b"\xa0",
    b"\x85",
    b"1.2.840.10008",
    b"nan",
    b"inf",
    b"12345678901234567890",
]
TEXT = st.lists(st.sampled_from(_PIECES), max_size=10).map(b"".join)
BINARY = st.binary(max_size=17)
# Mostly valid, so that the header reads on past its UIDs.
UID_VALUES = st.integers(0, 19).flatmap(
    lambda i: (
        st.just(b"1.2.840.10008.5.1.4.1.1.2")
        if i < 16
        else st.sampled_from([b"1.2.3.4.5\x00", b" 1.2.3 ", b"1.2\\3.4", b""])
        if i < 18
        else TEXT
    )
)

# (tag, the VRs it may be written with): public tags of every VR, ambiguous and LUT descriptor
# tags, tags the header reads, an unknown public tag, private tags with and without a known
# private creator.
_TAGS: list[tuple[int, tuple[str, ...]]] = [
    (0x00080008, ("CS",)),
    (0x00080020, ("DA",)),
    (0x00080030, ("TM",)),
    (0x0008002A, ("DT",)),
    (0x00080050, ("SH",)),
    (0x00080054, ("AE",)),
    (0x00080060, ("CS", "UN")),
    (0x00080081, ("ST",)),
    (0x00080090, ("PN",)),
    (0x00080119, ("UC",)),
    (0x0008040C, ("UV",)),
    (0x00081030, ("LO",)),
    (0x0008103E, ("LO",)),
    (0x00081190, ("UR",)),
    (0x00089459, ("FL",)),
    (0x00100010, ("PN", "UN")),
    (0x00100020, ("LO", "UN")),
    (0x00100021, ("LO",)),
    (0x00100030, ("DA",)),
    (0x00100040, ("CS",)),
    (0x00101001, ("PN",)),
    (0x00101010, ("AS",)),
    (0x00180015, ("CS",)),
    (0x00181638, ("OF",)),
    (0x00186020, ("SL",)),
    (0x00189087, ("FD",)),
    (0x00189219, ("SS",)),
    (0x00200010, ("SH",)),
    (0x00200011, ("IS", "UN")),
    (0x00200013, ("IS",)),
    (0x00204000, ("LT",)),
    (0x00280008, ("IS",)),
    (0x00280009, ("AT",)),
    (0x00280010, ("US", "UN")),
    (0x00280011, ("US",)),
    (0x00280030, ("DS",)),
    (0x00280103, ("US",)),
    (0x00280106, ("US", "SS")),
    (0x00281052, ("DS",)),
    (0x00281101, ("US", "SS")),
    (0x00281201, ("OW",)),
    (0x003A032E, ("OD",)),
    (0x00400280, ("ST",)),
    (0x0040A160, ("UT",)),
    (0x00660040, ("OL",)),
    (0x00720081, ("OV",)),
    (0x00720082, ("SV",)),
    (0x00109999, ("LO", "UN")),
    (0x00090010, ("LO",)),
    (0x00091001, ("LO", "UN", "OB", "DS", "US")),
    (0x00091002, ("SH", "UN")),
    (0x00091017, ("LT", "UN")),
    (0x00290010, ("LO",)),
    (0x00291008, ("CS", "UN")),
    (0x00291010, ("OB", "UN")),
]
_NUMERIC = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"} | set(_BULK_VRS)
_CHARSETS = [
    b"",
    b"ISO_IR 100",
    b"ISO_IR 192",
    b"ISO_IR 144",
    b"\\ISO 2022 IR 87",
    b"ISO 2022 IR 6\\ISO 2022 IR 100",
    b"GB18030",
    b"ISO_IR 6",
    b"NOT A CHARSET",
]
_CREATORS = [b"VNA TEST", b"GEMS_IDEN_01", b"SIEMENS CSA HEADER"]


# Every VR the fast path converts (and some it leaves to pydicom), one element per file: a value
# pydicom refuses would hide the others.
_VALUES = [
    b"",
    b" ",
    b"\x00",
    b" \t\r\n",
    b"A",
    b" A ",
    b"A \x00",
    b"\\",
    b"A\\",
    b"\\B",
    b"A\\ B \\C\x00",
    b"=",
    b"A=B=C",
    b"A==",
    b"=B",
    b"A^B=C^D=E^F=G",
    b"A\\=B",
    b"\xe9t\xe9",
    b"\xc3\xa9t\xc3\xa9 ",
    b"\xff",
    b"\x1b$BF|K\\\x1b(B",
    b"1.5",
    b" -1.5e3 \\+2",
    b"1.0\\",
    b"nan\\inf",
    b"7\\8.0\\ 9 ",
    b"7.5",
    b"1_000",
    b"9007199254740993",
    b"\x01\x02",
    b"\x01\x02\x03\x04",
    b"\x01\x02\x03\x04\x05\x06\x07\x08",
    b"\x00\x00\xc0\x7f\x00\x00\x80\xff",
    b"1.2.840.10008.1.2\x00",
    b" 1.2.3 \\ 4.5",
]
_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "PN"}
_VR_TAGS = {vr: tag for tag, vrs in _TAGS for vr in vrs if tag >> 16 != 0x0009}


@pytest.mark.parametrize("vr", sorted(_VR_TAGS))
def test_every_vr(scratch: Path, vr: str) -> None:
    uid = b"1.2.840.10008.5.1.4.1.1.2"
    for value in _VALUES:
        for charset, (implicit, little, ts) in [
            (b"", _ENCODINGS[0]),
            (b"ISO_IR 100", _ENCODINGS[1]),
            (b"ISO_IR 192", _ENCODINGS[0]) if vr in _TEXT_VRS else (b"", _ENCODINGS[2]),
        ]:
            top = {t: ("UI", uid) for t in (0x00080016, 0x00080018, 0x0020000D, 0x0020000E)}
            top[0x00080005] = ("CS", charset)
            top[_VR_TAGS[vr]] = (vr, value)
            body = b"".join(
                _element(t, v, b, implicit=implicit, little=little)
                for t, (v, b) in sorted(top.items())
            )
            scratch.write_bytes(_part10(body, ts, uid.decode()))
            assert_same(lambda: read_dataset(scratch), json_alone=False)


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> dict[int, tuple[str, bytes]]:
    out: dict[int, tuple[str, bytes]] = {}
    for tag, vrs in draw(st.lists(st.sampled_from(_TAGS), max_size=12)):
        vr = draw(st.sampled_from(vrs))
        if tag in (0x00090010, 0x00290010):
            value = draw(st.sampled_from(_CREATORS))
        else:
            value = draw(BINARY if vr in _NUMERIC else TEXT)
        out[tag] = (vr, value)
    if draw(st.booleans()):
        out[0x00080005] = ("CS", draw(st.sampled_from(_CHARSETS)))
    return out


@st.composite
def data_sets(draw: st.DrawFn) -> tuple[bytes, str]:
    ts = draw(
        st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
    )
    implicit, little = ts == ImplicitVRLittleEndian, ts != ExplicitVRBigEndian
    top = draw(elements())
    sop_class = draw(UID_VALUES)
    for tag in (0x00080016, 0x00080018, 0x0020000D, 0x0020000E):
        top[tag] = ("UI", sop_class if tag == 0x00080016 else draw(UID_VALUES))
    parts = []
    for tag, (vr, value) in sorted(top.items()):
        parts.append((tag, _element(tag, vr, value, implicit=implicit, little=little)))
    if draw(st.booleans()):
        items = []
        for _ in range(draw(st.integers(0, 2))):
            item = draw(elements())
            order = sorted(item) if draw(st.booleans()) else list(item)
            items.append(
                b"".join(_element(t, *item[t], implicit=implicit, little=little) for t in order)
            )
        parts.append(
            (
                0x00081140,
                _sequence(
                    0x00081140,
                    items,
                    implicit=implicit,
                    little=little,
                    undefined=draw(st.booleans()),
                ),
            )
        )
    parts.sort(key=lambda p: p[0])
    body = b"".join(p[1] for p in parts)
    if draw(st.booleans()):
        body += _element(0x7FE00010, "OW", b"\x00\x01" * 4, implicit=implicit, little=little)
    text = sop_class.decode("latin-1").rstrip("\x00 ")
    return _part10(body, ts, text if is_valid_uid(text) else "1.2.840.10008.5.1.4.1.1.2"), ts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=data_sets())
def test_any_value_in_any_vr_gives_the_same_results(scratch: Path, case: tuple[bytes, str]) -> None:
    data, _ts = case
    scratch.write_bytes(data)
    read = _reader(scratch)
    assert read is not None
    assert_same(read)


MUTATION_BASES = [
    p.read_bytes()
    for p in CORPUS
    if p.name in ("MR_small.dcm", "rtplan.dcm", "CT_small.dcm", "chrSQEncoding.dcm", "reportsi.dcm")
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(MUTATION_BASES),
    edits=st.lists(
        st.tuples(st.integers(min_value=132, max_value=3000), st.integers(0, 255)), max_size=6
    ),
)
def test_mutated_files_give_the_same_results(
    scratch: Path, base: bytes, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(base)
    for position, value in edits:
        if position < len(data):
            data[position] = value
    scratch.write_bytes(bytes(data))
    read = _reader(scratch)
    if read is not None:
        assert_same(read)


# --- pydicom configured otherwise: everything goes to pydicom -----------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        "datetime_conversion",
        "use_DS_decimal",
        "use_none_as_empty_text_VR_value",
        "raise_on_invalid",
        "value_hook",
    ],
)
def test_other_pydicom_settings_turn_the_fast_path_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setting: str
) -> None:
    ds = _ct()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Buc^Jérôme"
    path = _file(ds, tmp_path)
    if setting == "raise_on_invalid":
        monkeypatch.setattr(config.settings, "_reading_validation_mode", config.RAISE)
    elif setting == "value_hook":
        monkeypatch.setattr(hooks, "raw_element_value", raw_element_value_fix_separator)
    else:
        monkeypatch.setattr(config, setting, True)
    assert not fast_json.usable()
    assert_same(lambda: read_dataset(path))


def test_default_settings_use_the_fast_path() -> None:
    assert hooks.raw_element_value is raw_element_value
    assert fast_json.usable()
