"""Header parsing: every real instance is indexed, every broken upload is refused with a reason.

pydicom's bundled test files are the corpus: many transfer syntaxes, files without file meta,
truncated files, DICOMDIRs and plain non-DICOM files.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from vna.dicom.parse import (
    BULK_THRESHOLD,
    InstanceHeader,
    dicom_json,
    extract_header,
    parse_da,
    read_dataset,
)
from vna.errors import InvalidInstance, SopClassMismatch

TEST_DIR = Path(str(get_testdata_file("CT_small.dcm"))).parent
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: Files pydicom ships as deliberately cut short; pydicom itself reads them without complaint.
PYDICOM_TRUNCATED = ("MR_truncated.dcm", "rtplan_truncated.dcm")
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

# pydicom warns about the odd files in its own corpus; the warnings are not under test here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def parse(path: Path) -> tuple[Dataset, InstanceHeader]:
    ds = read_dataset(path)
    return ds, extract_header(ds)


def _quiet_read(path: Path, **kwargs: object) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, **kwargs)  # type: ignore[arg-type]


def _classify() -> dict[str, list[Path]]:
    """Sort the corpus with pydicom as the oracle (full read, pixels included)."""
    groups: dict[str, list[Path]] = {"instance": [], "no_uids": [], "not_part10": []}
    for path in sorted(p for p in TEST_DIR.rglob("*") if p.is_file()):
        if path.name in PYDICOM_TRUNCATED:
            continue
        try:
            ds = _quiet_read(path)
        except InvalidDicomError:  # no "DICM" and file meta: pydicom wants force=True
            groups["not_part10"].append(path)
            continue
        if "TransferSyntaxUID" not in ds.file_meta:
            continue  # covered by its own test
        if all(ds.get(k) for k in REQUIRED_UIDS):
            groups["instance"].append(path)
        else:
            groups["no_uids"].append(path)
    return groups


CORPUS = _classify()
#: Real DICOM data sets written without preamble and file meta (pydicom reads them with force).
NO_META = {"no_meta.dcm", "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "rtstruct.dcm"}


def _id(path: Path) -> str:
    return str(path.relative_to(TEST_DIR))


def test_corpus_is_what_these_tests_expect() -> None:
    assert len(CORPUS["instance"]) >= 60
    assert NO_META <= {p.name for p in CORPUS["not_part10"]}
    assert CORPUS["no_uids"]


# --- well-formed instances ----------------------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS["instance"], ids=_id)
def test_well_formed_instance_parses(path: Path) -> None:
    full = _quiet_read(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds, header = parse(path)
    assert header.sop_class_uid == full.SOPClassUID
    assert header.sop_instance_uid == full.SOPInstanceUID
    assert header.study_uid == full.StudyInstanceUID
    assert header.series_uid == full.SeriesInstanceUID
    assert header.transfer_syntax == full.file_meta.TransferSyntaxUID
    assert header.has_pixel_data == ("PixelData" in full)
    assert "PixelData" not in ds  # never read, let alone decoded


def test_header_fields_of_a_known_instance() -> None:
    _, h = parse(Path(str(get_testdata_file("CT_small.dcm"))))
    assert h.sop_class_uid == CT_IMAGE_STORAGE
    assert h.transfer_syntax == ExplicitVRLittleEndian
    assert h.modality == "CT"
    assert h.patient_name == "CompressedSamples^CT1"
    assert h.patient_id == "1CT1"
    assert h.study_date == dt.date(2004, 1, 19)
    assert (h.rows, h.columns) == (128, 128)
    assert h.has_pixel_data


@pytest.mark.parametrize(
    "name",
    [
        "image_dfl.dcm",  # deflated: the data set is one zlib stream
        "SC_rgb_jpeg.dcm",  # implicit VR written under an explicit transfer syntax
        "MR_small_bigendian.dcm",
        "JPEG2000.dcm",  # encapsulated pixel data
        "rtplan.dcm",  # implicit VR with nested sequences
    ],
)
def test_unusual_encodings_still_parse_and_report_pixel_data(name: str) -> None:
    path = Path(str(get_testdata_file(name)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, header = parse(path)
    assert header.has_pixel_data == ("PixelData" in _quiet_read(path))


@pytest.mark.parametrize("path", CORPUS["no_uids"], ids=_id)
def test_file_without_required_uids_is_refused_naming_the_attribute(path: Path) -> None:
    full = _quiet_read(path)
    first_missing = next(k for k in REQUIRED_UIDS if not full.get(k))
    with pytest.raises(InvalidInstance, match=f"required attribute {first_missing} is missing"):
        parse(path)


# --- files that are not Part 10 instances -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NO_META))
def test_dicom_without_file_meta_is_refused(name: str) -> None:
    path = Path(str(get_testdata_file(name)))
    assert len(_quiet_read(path, force=True)) > 0  # pydicom reads it when forced
    with pytest.raises(InvalidInstance, match="not a DICOM Part 10 file"):
        parse(path)


@pytest.mark.parametrize("path", CORPUS["not_part10"], ids=_id)
def test_file_that_is_not_part10_is_refused(path: Path) -> None:
    """Text, JSON, gzip, ICC profiles and bare data sets in the corpus."""
    with pytest.raises(InvalidInstance, match="not a DICOM Part 10 file"):
        parse(path)


def test_file_meta_without_transfer_syntax_is_refused() -> None:
    with pytest.raises(InvalidInstance, match="transfer syntax"):
        parse(Path(str(get_testdata_file("meta_missing_tsyntax.dcm"))))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00",
        b"garbage bytes that are not DICOM at all" * 10,
        bytes(range(256)) * 8,
        b"\x00" * 128 + b"DICM",
        b"\x00" * 128 + b"DICM" + b"\xff" * 300,
        b"\x00" * 128 + b"DICM" + bytes(range(256)),
    ],
    ids=["empty", "one-byte", "text", "binary", "prefix-only", "prefix-ff", "prefix-ramp"],
)
def test_garbage_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "upload.dcm"
    path.write_bytes(content)
    with pytest.raises(InvalidInstance) as info:
        parse(path)
    assert str(info.value).strip()


def test_unreadable_path_is_an_invalid_instance(tmp_path: Path) -> None:
    with pytest.raises(InvalidInstance):
        read_dataset(tmp_path / "vanished.dcm")


# --- truncated uploads --------------------------------------------------------------------------


@pytest.mark.parametrize("name", PYDICOM_TRUNCATED)
def test_pydicom_truncated_files_are_refused(name: str) -> None:
    with pytest.raises(InvalidInstance, match="truncated"):
        parse(Path(str(get_testdata_file(name))))


def _cut_points(path: Path) -> list[tuple[str, int]]:
    """Offsets strictly inside an element (value or header), so no cut is a clean boundary."""
    data = path.read_bytes()
    ds = _quiet_read(path, stop_before_pixels=False)
    cuts = [("meta-header", 133), ("meta-value", 150)]
    raw: list[Any] = [ds.get_item(tag) for tag in ds.keys()]
    values = [e for e in raw if hasattr(e, "value_tell") and e.length not in (0, 1, 0xFFFFFFFF)]
    step = max(1, len(values) // 12)
    for e in values[::step]:
        cuts.append((f"value-{e.tag:08X}", e.value_tell + e.length // 2))
        cuts.append((f"header-{e.tag:08X}", e.value_tell - 3))
    pixels: Any = ds.get_item(0x7FE00010)
    if pixels is not None and hasattr(pixels, "value_tell"):
        if pixels.length == 0xFFFFFFFF:  # encapsulated: in the offset table, a fragment, the end
            cuts += [("pixel-item", pixels.value_tell + 4), ("pixel-fragment", len(data) - 40)]
        else:
            cuts.append(("pixel-data", pixels.value_tell + pixels.length // 2))
    cuts.append(("last-byte", len(data) - 1))
    return sorted({c for c in cuts if 132 < c[1] < len(data)}, key=lambda c: c[1])


TRUNCATION_SOURCES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small.dcm",  # elements after Pixel Data
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",  # encapsulated
    "SC_rgb_rle_2frame.dcm",  # RLE, two fragments
    "rtplan.dcm",  # sequences, no pixels
    "reportsi.dcm",  # structured report: deeply nested sequences
    "waveform_ecg.dcm",
]


@pytest.mark.parametrize(
    ("name", "where", "cut"),
    [
        (name, where, cut)
        for name in TRUNCATION_SOURCES
        for where, cut in _cut_points(Path(str(get_testdata_file(name))))
    ],
)
def test_truncated_copy_is_refused(tmp_path: Path, name: str, where: str, cut: int) -> None:
    data = Path(str(get_testdata_file(name))).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:cut])
    with pytest.raises(InvalidInstance, match="truncated") as info:
        parse(path)
    assert "\n" not in str(info.value)
    # Ingest examines most instances from memory, where simple headers take the fast reader
    # and the framing check goes on from where it stopped.
    with pytest.raises(InvalidInstance, match="truncated") as info:
        extract_header(read_dataset(data[:cut]))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_deflated_file_is_refused(tmp_path: Path, fraction: float) -> None:
    data = Path(str(get_testdata_file("image_dfl.dcm"))).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InvalidInstance):
        parse(path)


# --- attributes written wrong -------------------------------------------------------------------


def make_instance(tmp_path: Path, **overrides: object) -> Path:
    """A small, valid CT instance; keyword=None deletes the attribute."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P1"
    ds.PatientName = "Doe^Jane"
    ds.Modality = "CT"
    ds.StudyDate = "20240229"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(32)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128  # written with "DICM" as is, meta kept exactly as set here
    for keyword, value in overrides.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / "made.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=False)
    return path


def test_generated_instance_parses(tmp_path: Path) -> None:
    _, h = parse(make_instance(tmp_path))
    assert h.study_date == dt.date(2024, 2, 29)
    assert h.has_pixel_data


@pytest.mark.parametrize("keyword", REQUIRED_UIDS)
def test_missing_uid_is_refused(tmp_path: Path, keyword: str) -> None:
    path = make_instance(tmp_path, **{keyword: None})
    with pytest.raises(InvalidInstance, match=f"{keyword} is missing"):
        parse(path)


@pytest.mark.parametrize(
    "bad",
    ["1.2.840.Doe^Jane", "1.2.3.4 5", "abc", "1.2." + "3" * 70, "1..2", ".1.2"],
)
def test_invalid_uid_text_is_refused(tmp_path: Path, bad: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = make_instance(tmp_path, SOPInstanceUID=bad)
    with pytest.raises(InvalidInstance, match="SOPInstanceUID is not a valid UID"):
        parse(path)


def test_media_storage_sop_class_mismatch(tmp_path: Path) -> None:
    path = make_instance(tmp_path)
    ds = _quiet_read(path)
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.4")  # MR Image Storage
    ds.save_as(path, enforce_file_format=False)
    with pytest.raises(SopClassMismatch) as info:
        parse(path)
    assert "1.2.840.10008.5.1.4.1.1.4" in str(info.value)
    assert CT_IMAGE_STORAGE in str(info.value)


def test_stale_media_storage_sop_instance_uid_is_tolerated(tmp_path: Path) -> None:
    path = make_instance(tmp_path)
    ds = _quiet_read(path)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(path, enforce_file_format=False)
    _, h = parse(path)
    assert h.sop_instance_uid == ds.SOPInstanceUID


# --- pixel data is never loaded -----------------------------------------------------------------


def test_large_multiframe_header_parse_does_not_load_pixels(tmp_path: Path) -> None:
    frames = 100  # 512 x 512 x 16 bit: 50 MiB of pixel data
    pixels = bytes(512 * 512 * 2 * frames)
    path = make_instance(tmp_path, Rows=512, Columns=512, NumberOfFrames=frames, PixelData=pixels)
    del pixels
    tracemalloc.start()
    started = time.perf_counter()
    try:
        ds, h = parse(path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "PixelData" not in ds
    assert h.has_pixel_data and h.number_of_frames == frames and h.rows == 512
    assert peak < 4 * 1024 * 1024, f"parse allocated {peak} bytes for a 50 MiB file"
    assert elapsed < 2.0
    # The same file one frame short is caught without reading the pixels either.
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 512 * 512 * 2)
    with pytest.raises(InvalidInstance, match="truncated"):
        parse(path)


# --- DICOM JSON for the catalogue ---------------------------------------------------------------


def test_dicom_json_keeps_header_and_drops_bulk_data(tmp_path: Path) -> None:
    path = make_instance(tmp_path)
    ds = _quiet_read(path)
    ds.add_new(0x00091010, "OB", bytes(BULK_THRESHOLD + 2))  # private bulk: left out
    ds.add_new(0x00091011, "OB", b"\x01\x02")  # small binary: kept inline
    ds.save_as(path, enforce_file_format=False)
    parsed = read_dataset(path)
    doc = dicom_json(parsed)
    json.dumps(doc)  # storable as jsonb
    assert doc["0020000D"] == {"vr": "UI", "Value": [ds.StudyInstanceUID]}
    assert doc["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert "7FE00010" not in doc
    assert "00091010" not in doc
    assert "InlineBinary" in doc["00091011"]


# --- dates --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240131", dt.date(2024, 1, 31)),
        ("20240229", dt.date(2024, 2, 29)),
        ("1999.12.31", dt.date(1999, 12, 31)),  # ACR-NEMA form
        (" 20240131 ", dt.date(2024, 1, 31)),
        ("20230229", None),  # not a leap year
        ("20241301", None),
        ("20240100", None),
        ("2024013", None),
        ("202401311", None),
        ("2024-01-31", None),
        ("20240131-20240201", None),  # a range is a query, not a value
        ("", None),
        ("        ", None),
        ("abcdefgh", None),
        ("00000000", None),
    ],
)
def test_parse_da(value: str, expected: dt.date | None) -> None:
    assert parse_da(value) == expected


# --- nothing but InvalidInstance escapes --------------------------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d) / "upload.dcm"


def _parse_everything(path: Path) -> None:
    """The ingest pipeline's sequence: read, extract, convert to JSON."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = read_dataset(path)
            extract_header(ds)
            dicom_json(ds)
        except InvalidInstance as exc:
            assert str(exc).strip()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2048), with_prefix=st.booleans())
def test_arbitrary_bytes_raise_only_invalid_instance(
    scratch: Path, data: bytes, with_prefix: bool
) -> None:
    scratch.write_bytes((b"\x00" * 128 + b"DICM" if with_prefix else b"") + data)
    _parse_everything(scratch)


MUTATION_BASES = [
    Path(str(get_testdata_file(n))).read_bytes()
    for n in ("MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "reportsi.dcm")
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(MUTATION_BASES),
    cut=st.floats(min_value=0.0, max_value=1.0),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=4000), st.integers(0, 255)), max_size=8
    ),
)
def test_mutated_prefixes_of_valid_files_raise_only_invalid_instance(
    scratch: Path, base: bytes, cut: float, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(base[: int(len(base) * cut)])
    for position, value in edits:
        if 132 <= position < len(data):  # keep the preamble: reach the parser proper
            data[position] = value
    scratch.write_bytes(bytes(data))
    _parse_everything(scratch)
