"""vna.dicom.fast_read against pydicom as the oracle: whatever read_header returns must be what
``pydicom.dcmread(BytesIO(data), stop_before_pixels=True)`` returns, element for element and
attribute for attribute; anything else must be None.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from tests.factory import ct_study, part10
from vna.dicom import parse
from vna.dicom.fast_read import read_header
from vna.dicom.parse import dicom_json, extract_header

# pydicom warns about the odd files in its own corpus and in mutated ones; not under test.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def pydicom_read(data: bytes) -> FileDataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception:
        return None


def check(data: bytes) -> bool:
    """Whether ``data`` took the fast path; fails if the fast answer is not pydicom's."""
    fast = read_header(data)
    if fast is None:
        return False
    slow = pydicom_read(data)
    assert slow is not None, "pydicom cannot read what the fast reader accepted"
    assert_identical(fast, slow, data)
    return True


def assert_identical(fast: FileDataset, slow: FileDataset, data: bytes) -> None:
    assert type(fast) is type(slow) is FileDataset
    assert fast.preamble == slow.preamble
    assert type(fast.file_meta) is type(slow.file_meta)
    assert_same_elements(fast.file_meta._dict, slow.file_meta._dict)
    assert_same_elements(fast._dict, slow._dict)
    assert state(fast.file_meta) == state(slow.file_meta)
    assert state(fast) == state(slow)
    assert type(fast.buffer) is type(slow.buffer)
    assert fast.buffer.getvalue() == slow.buffer.getvalue() == data  # type: ignore[union-attr]
    assert fast.buffer.tell() == slow.buffer.tell()  # type: ignore[union-attr]
    for ds in (fast, slow):
        # As vna.dicom.parse.read_dataset leaves a data set for dicom_json and extract_header.
        setattr(ds, parse._PARSED, dict(ds._dict))
    assert behaviour(fast) == behaviour(slow)
    # What the behaviours converted, they converted alike.
    assert_same_elements(fast._dict, slow._dict)
    assert_same_elements(fast.file_meta._dict, slow.file_meta._dict)


def assert_same_elements(fast: Any, slow: Any) -> None:
    assert list(fast) == list(slow)  # the same tags, in the same order
    assert all(type(tag) is BaseTag for tag in [*fast, *slow])
    for tag in slow:
        a, b = fast[tag], slow[tag]
        assert type(a) is type(b), tag
        if isinstance(b, RawDataElement):
            assert tuple(a) == tuple(b), tag
            assert [type(field) for field in a] == [type(field) for field in b], tag
        else:
            assert isinstance(b, DataElement)
            assert vars(a).keys() == vars(b).keys(), tag
            for name, value in vars(b).items():
                assert_same_value(vars(a)[name], value, f"{tag} {name}")


def assert_same_value(fast: Any, slow: Any, where: str) -> None:
    """Sequence items compared element by element: == on them would decode (and may raise)."""
    assert type(fast) is type(slow), where
    if isinstance(slow, Sequence):
        assert len(fast) == len(slow), where
        assert {k: v for k, v in vars(fast).items() if k != "_list"} == {
            k: v for k, v in vars(slow).items() if k != "_list"
        }, where
        for a, b in zip(fast, slow, strict=True):
            assert_same_elements(a._dict, b._dict)
            assert state(a) == state(b), where
    else:
        assert fast == slow, where


def state(ds: Dataset) -> dict[str, Any]:
    """Every attribute of ``ds`` but the ones compared on their own."""
    skip = {"_dict", "file_meta", "buffer", parse._PARSED}
    found = {name: value for name, value in vars(ds).items() if name not in skip}
    found["original_encoding"] = ds.original_encoding
    found["is_implicit_VR"] = ds.is_implicit_VR
    found["is_little_endian"] = ds.is_little_endian
    found["original_character_set"] = ds.original_character_set
    found["_character_set"] = outcome(lambda: ds._character_set)
    return found


def outcome(get: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", get())
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def behaviour(ds: FileDataset) -> list[tuple[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            outcome(lambda: getattr(ds, "PatientName", None)),
            outcome(lambda: getattr(ds, "StudyInstanceUID", None)),
            outcome(lambda: ds.file_meta.TransferSyntaxUID),
            outcome(lambda: str(ds)),
            outcome(lambda: dicom_json(ds)),
            outcome(lambda: extract_header(ds)),
        ]


# --- pydicom's own test files ------------------------------------------------------------


def test_pydicom_test_files() -> None:
    fast: list[str] = []
    other: list[str] = []
    for name in sorted(get_testdata_files()):
        path = Path(name)
        if path.is_file() and (data := path.read_bytes())[128:132] == b"DICM":
            # check() fails if pydicom cannot read what read_header accepted.
            (fast if check(data) else other).append(path.name)
    # 131 of the 163 take the fast path with pydicom 3.0.2's files: the others are big endian,
    # deflated, have undefined length sequences or are encoded unlike their transfer syntax.
    assert len(fast) >= 120, (len(fast), other)


# --- files made here ---------------------------------------------------------------------


def ct(transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """A small CT image, the same every run (the mutated files too)."""
    ds = ct_study(series=1, slices=1, size=4, study_uid="1.2.826.0.1.3680043.8.498.1")[0]
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1.1"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.PixelData = bytes(range(32))
    return ds


def with_sequence(ds: Dataset) -> Dataset:
    items = []
    for n in range(3):
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = f"1.2.3.{n}"
        items.append(item)
    ds.ReferencedImageSequence = Sequence(items)
    ds.ReferencedStudySequence = Sequence([])  # an empty sequence: zero length
    return ds


def with_charset(ds: Dataset, charset: str | list[str], name: str) -> Dataset:
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.StudyDescription = name.replace("^", " ")
    return ds


def with_private(ds: Dataset) -> Dataset:
    block = ds.private_block(0x0009, "VNA TEST", create=True)
    block.add_new(0x01, "LO", "private text")
    block.add_new(0x02, "US", 7)
    block.add_new(0x03, "OB", b"\x00\x01\x02\x03")
    return ds


def with_empty_values(ds: Dataset) -> Dataset:
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = None
    ds.SliceThickness = None
    ds.add_new(0x00181030, "LO", "")  # Protocol Name
    ds.add_new(0x00280106, "US", None)  # Smallest Image Pixel Value
    ds.add_new(0x00181000, "LO", "DEVICE")  # after the empty ones
    return ds


def with_empty_meta_element(ds: Dataset) -> Dataset:
    ds.file_meta.PrivateInformationCreatorUID = UID("1.2.3.4")
    ds.file_meta.PrivateInformation = b""  # empty OB: its raw value is None
    return ds


MADE: dict[str, Callable[[str], Dataset]] = {
    "plain": lambda ts: ct(ts),
    "sequence": lambda ts: with_sequence(ct(ts)),
    "utf8": lambda ts: with_charset(ct(ts), "ISO_IR 192", "Müller^Zoë=山田^太郎"),
    "latin1": lambda ts: with_charset(ct(ts), "ISO_IR 100", "Ångström^Jürgen"),
    "padded-charset": lambda ts: with_charset(ct(ts), "ISO_IR 13", "YAMADA^TARO"),
    "multi-charset": lambda ts: with_charset(
        ct(ts), ["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎"
    ),
    "empty-charset": lambda ts: with_charset(ct(ts), "", "DOE^JOHN"),
    "private": lambda ts: with_private(ct(ts)),
    "empty-values": lambda ts: with_empty_values(ct(ts)),
    "empty-meta-element": lambda ts: with_empty_meta_element(ct(ts)),
    "everything": lambda ts: with_empty_values(
        with_private(with_sequence(with_charset(ct(ts), "ISO_IR 192", "Łukasz^Żółw")))
    ),
}


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("kind", list(MADE))
def test_made_files_take_the_fast_path(kind: str, transfer_syntax: str) -> None:
    data = part10(MADE[kind](transfer_syntax))
    assert check(data)


def test_encapsulated_syntax_takes_the_fast_path() -> None:
    ds = ct(JPEGBaseline8Bit)
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xd9"])
    ds["PixelData"].VR = "OB"
    data = part10(ds)
    assert check(data)
    ds.file_meta.TransferSyntaxUID = RLELossless
    assert check(part10(ds))


def test_without_pixel_data() -> None:
    ds = with_sequence(ct())
    del ds.PixelData
    assert check(part10(ds))


def test_elements_after_pixel_data_are_not_read() -> None:
    ds = ct()
    ds.DataSetTrailingPadding = b"\x00" * 4
    data = part10(ds)
    fast = read_header(data)
    assert fast is not None and "DataSetTrailingPadding" not in fast
    assert check(data)


def test_bytes_like_input() -> None:
    data = part10(MADE["everything"](ExplicitVRLittleEndian))
    for like in (bytearray(data), memoryview(data)):
        fast, slow = read_header(like), pydicom_read(data)  # type: ignore[arg-type]
        assert fast is not None and slow is not None
        assert_identical(fast, slow, data)


def warned(read: Callable[[], Any]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = read()
        except Exception as exc:
            found = exc
    return found, [str(w.message) for w in caught]


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_same_warnings_and_errors(transfer_syntax: str) -> None:
    """pydicom warns about an unknown character set (three times); in RAISE mode it fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = part10(with_charset(ct(transfer_syntax), "ISO_IR 999", "DOE^JOHN"))
    fast, fast_warnings = warned(lambda: read_header(data))
    slow, slow_warnings = warned(lambda: pydicom_read_raising(data))
    assert isinstance(fast, FileDataset) and isinstance(slow, FileDataset)
    assert fast_warnings == slow_warnings
    assert len(slow_warnings) == 3

    mode = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.RAISE
    try:
        assert read_header(data) is None
        with pytest.raises(LookupError):
            pydicom_read_raising(data)
        assert check(part10(MADE["latin1"](transfer_syntax)))
    finally:
        pydicom.config.settings.reading_validation_mode = mode


def pydicom_read_raising(data: bytes) -> FileDataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def splice(data: bytes, at: int, new: bytes, old_length: int = 0) -> bytes:
    return data[:at] + new + data[at + old_length :]


def data_set_start(data: bytes) -> int:
    group_length = struct.unpack_from("<L", data, 132 + 8)[0]
    return 132 + 12 + group_length


def test_outside_the_simple_case_is_none() -> None:
    """pydicom reads each of these, but only pydicom knows how."""
    cases: dict[str, bytes] = {}
    for ts in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian):
        cases[ts.name] = part10(ct(ts))
    undefined = with_sequence(ct())
    undefined["ReferencedImageSequence"].is_undefined_length = True
    cases["undefined length sequence"] = part10(undefined)
    unknown_ts = ct()
    unknown_ts.file_meta.TransferSyntaxUID = UID("1.2.3.4.5.6")
    buf = io.BytesIO()
    unknown_ts.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=True)
    cases["unknown transfer syntax"] = buf.getvalue()

    ds = ct()
    explicit = part10(ds)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    implicit = part10(ds)
    explicit_start, implicit_start = data_set_start(explicit), data_set_start(implicit)
    # pydicom notices the data set is not encoded as the syntax says and reads it as it is.
    cases["explicit data set, implicit syntax"] = (
        implicit[:implicit_start] + explicit[explicit_start:]
    )
    cases["implicit data set, explicit syntax"] = (
        explicit[:explicit_start] + implicit[implicit_start:]
    )
    # Command set (group 0000) elements before the data set, which pydicom reads apart and
    # puts after the data set's elements.
    command = struct.pack("<HH", 0, 0x0100)
    cases["command set, explicit"] = splice(
        explicit, explicit_start, command + struct.pack("<2sHH", b"US", 2, 1)
    )
    cases["command set, implicit"] = splice(
        implicit, implicit_start, command + struct.pack("<LH", 2, 1)
    )
    # An item delimiter at the top level ends pydicom's data set there.
    delimiter = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    patient_id = struct.pack("<HH", 0x0010, 0x0020)
    cases["item delimiter, implicit"] = splice(
        implicit, implicit.index(patient_id, implicit_start), delimiter
    )
    cases["item delimiter, explicit"] = splice(
        explicit, explicit.index(patient_id, explicit_start), delimiter
    )

    for name, data in cases.items():
        assert pydicom_read(data) is not None, name
        assert read_header(data) is None, name
    assert read_header(explicit[:128] + b"DICX" + explicit[132:]) is None
    # The first element's length reads as a VR ("UI"), so pydicom reads the data set as
    # explicit VR (and fails); read as the syntax says, the file is fine.
    looks_explicit = struct.pack("<HH2sH", 0x0008, 0x0001, b"UI", 0) + bytes(0x4955)
    assert read_header(splice(implicit, implicit_start, looks_explicit)) is None


def test_undefined_length_at_top_level_is_none() -> None:
    ds = ct()
    del ds.PixelData
    ds.add_new(0x00091010, "UN", b"\x01\x02")
    data = part10(ds)
    plain = read_header(data)
    assert plain is not None
    raw = plain._dict[BaseTag(0x00091010)]
    assert isinstance(raw, RawDataElement)
    # The UN element's 32-bit length becomes undefined (an empty value, then a delimiter).
    at = raw.value_tell - 4
    undefined = splice(data, at, b"\xff\xff\xff\xff" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", 6)
    assert read_header(undefined) is None
    assert pydicom_read(undefined) is not None


# --- mutated files -----------------------------------------------------------------------


def mutations(data: bytes, rng: random.Random, count: int) -> Iterator[bytes]:
    """Damaged copies of ``data``: flipped bytes, cuts and rewritten length fields."""
    parsed = read_header(data)
    assert parsed is not None
    elements = [
        e
        for e in (*parsed.file_meta._dict.values(), *parsed._dict.values())
        if isinstance(e, RawDataElement)  # a few are decoded, and have no offset
    ]
    # Just past Pixel Data's header (the made files' pixel data is small).
    header_end = min(len(data), max(e.value_tell + e.length for e in elements) + 16)
    for _ in range(count):
        kind = rng.randrange(4)
        buf = bytearray(data)
        if kind == 0:
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(header_end)] = rng.randrange(256)
        elif kind == 1:
            buf = buf[: rng.randrange(header_end + 16)]
        elif kind == 2:
            elem = rng.choice(elements)
            size = 4 if elem.VR is None or elem.VR in EXPLICIT_VR_LENGTH_32 else 2
            top = 256**size - 1
            new = rng.choice([0, elem.length + rng.randint(-3, 3), rng.randrange(top), top])
            new = max(0, min(new, top))
            buf[elem.value_tell - size : elem.value_tell] = new.to_bytes(size, "little")
        else:
            at = rng.randrange(132, header_end)
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.choice([1, 2, 4, 8])))
        yield bytes(buf)


def test_mutated_files() -> None:
    rng = random.Random(20240115)
    bases = [
        part10(MADE["everything"](ExplicitVRLittleEndian)),
        part10(MADE["everything"](ImplicitVRLittleEndian)),
        part10(MADE["utf8"](ExplicitVRLittleEndian)),
        part10(MADE["plain"](ImplicitVRLittleEndian)),
        # Other writers' files: CT_small's private elements, rtplan's sequences.
        Path(str(get_testdata_file("CT_small.dcm"))).read_bytes(),
        Path(str(get_testdata_file("rtplan.dcm"))).read_bytes(),
    ]
    fast = total = 0
    for base in bases:
        for data in mutations(base, rng, 150):
            total += 1
            fast += check(data)
    # Many damaged files are still simple ones (a changed value, a cut in the pixel data).
    assert fast >= total // 10, (fast, total)
