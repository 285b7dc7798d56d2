"""Read what the archive needs from a DICOM Part 10 file without decoding pixel data.

The header is parsed with pydicom up to Pixel Data; the framing of every element in the file
is then walked (values skipped, not read) to prove the file is complete, because pydicom parses
a truncated upload cleanly and it would be acknowledged with data missing.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import struct
import zlib
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from vna.dicom import fast_json, fast_read
from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidInstance, SopClassMismatch

#: Where read_dataset keeps the data set's elements as parsed (see _as_parsed).
_PARSED = "_vna_parsed"
#: Binary VRs whose values above this size are left out of the catalogue's metadata copy.
BULK_THRESHOLD = 64 * 1024
_BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQ_DELIMITER = 0xFFFEE0DD
# PS3.5 7.1.2: VRs with a reserved field and a 32-bit length in explicit VR encoding.
_LONG_LENGTH_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_MAX_DEPTH = 64


@dataclass(frozen=True)
class InstanceHeader:
    """The facts the catalogue indexes, taken from one instance's header."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: dt.date | None
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    has_pixel_data: bool


def read_dataset(source: Path | bytes, *, check_complete: bool = True) -> Dataset:
    """Parse a Part 10 file's header (pixel data neither read nor decoded), from its path or
    from the whole file's bytes already in memory."""
    try:
        with _open(source) as f:
            size = len(source) if isinstance(source, bytes) else os.fstat(f.fileno()).st_size
            try:
                # pydicom's own reader unless the header is one fast_read can frame itself
                # (with the same result: tests/unit/test_fast_read.py).
                fast = fast_read.read_framed(source) if isinstance(source, bytes) else None
                ds = fast.dataset if fast else pydicom.dcmread(f, stop_before_pixels=True)
                # What extract_header and dicom_json tell a changed data set by.
                setattr(ds, _PARSED, dict(ds._dict))
            except InvalidDicomError:
                raise
            except Exception:
                # pydicom trips over a cut-short file in many ways ("No tag to read at ..."):
                # name the real problem when the framing shows it.
                if check_complete:
                    _raise_if_truncated(f, size)
                raise
            ds._vna_has_pixel_data = False
            if check_complete and fast:
                # The fast reader framed every element up to Pixel Data: the rest is left.
                f.seek(fast.stop)
                framing = _Framing(f, size, little=True)
                ds._vna_has_pixel_data = framing.elements(size, fast.implicit)
            elif check_complete:
                ds._vna_has_pixel_data = _check_framing_complete(f, ds.file_meta, size)
    except InvalidDicomError as exc:
        raise InvalidInstance(f"not a DICOM Part 10 file: {_first_line(exc)}") from exc
    except InvalidInstance:
        raise
    except (EOFError, struct.error, BytesLengthException) as exc:
        raise InvalidInstance("truncated DICOM file (ends inside the header)") from exc
    except zlib.error as exc:
        raise InvalidInstance(f"cannot inflate deflated DICOM data: {_first_line(exc)}") from exc
    except (ValueError, KeyError, TypeError, OverflowError, NotImplementedError) as exc:
        raise InvalidInstance(f"cannot parse DICOM header: {_first_line(exc)}") from exc
    except OSError as exc:
        raise InvalidInstance(f"cannot read DICOM data: {_first_line(exc)}") from exc
    except Exception as exc:  # pydicom raises many types on malformed input (as extract_header)
        raise InvalidInstance(f"cannot parse DICOM data: {_first_line(exc)}") from exc
    return ds


def data_set_offset(f: BinaryIO) -> int:
    """Where the data set starts in a Part 10 file: after the 128-byte preamble, ``DICM`` and
    the File Meta Information group (always explicit VR little endian, PS3.10 7.1)."""
    f.seek(0)
    head = f.read(132)
    if len(head) < 132 or head[128:] != b"DICM":
        raise InvalidInstance("not a DICOM Part 10 file: no DICM prefix")
    pos = 132
    while True:
        element = f.read(8)
        if len(element) < 8:
            return pos  # a file of file meta only; the parser has judged it already
        group, _elem, vr = struct.unpack("<HH2s", element[:6])
        if group != 0x0002:
            return pos
        if vr in _LONG_LENGTH_VRS:
            more = f.read(4)
            if len(more) < 4:
                raise InvalidInstance("truncated DICOM file (ends inside the file meta header)")
            (length,) = struct.unpack("<L", more)
            header = 12
        else:
            (length,) = struct.unpack("<H", element[6:8])
            header = 8
        pos += header + length
        f.seek(pos)


def extract_header(ds: Dataset) -> InstanceHeader:
    """Validate the identifying attributes and collect the indexed ones."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or not _has(meta, "TransferSyntaxUID"):
        raise InvalidInstance("no File Meta Information (PS3.10 7.1): transfer syntax unknown")
    try:
        # Raw elements are read raw here even in a changed data set: dicom_json, which ingest
        # runs before it writes a changed header again, converts that one whole as before.
        with _as_parsed(ds):
            return _header(ds, meta)
    except InvalidInstance:
        raise
    except Exception as exc:  # pydicom raises many types on malformed values
        raise InvalidInstance(f"cannot read DICOM attributes: {_first_line(exc)}") from exc


def _header(ds: Dataset, meta: Dataset) -> InstanceHeader:
    fast = fast_json.usable()
    attrs = _Attributes(ds, fast)
    meta_attrs = _Attributes(meta, fast and isinstance(meta, Dataset))
    sop_class = _uid(attrs.text("SOPClassUID"), "SOPClassUID")
    sop_instance = _uid(attrs.text("SOPInstanceUID"), "SOPInstanceUID")
    study_uid = _uid(attrs.text("StudyInstanceUID"), "StudyInstanceUID")
    series_uid = _uid(attrs.text("SeriesInstanceUID"), "SeriesInstanceUID")
    ts = str(meta_attrs.text("TransferSyntaxUID", partial(getattr, meta)))
    media_class = str(meta_attrs.text("MediaStorageSOPClassUID") or "")
    # PS3.10 7.1: the meta header must describe the data set it precedes.
    if media_class and media_class != sop_class:
        raise SopClassMismatch(
            f"MediaStorageSOPClassUID {media_class} differs from SOPClassUID {sop_class}"
        )
    # A stale MediaStorageSOPInstanceUID (common after de-identification) is tolerated:
    # the data set's own SOPInstanceUID is authoritative and is what the archive indexes.
    return InstanceHeader(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_uid=study_uid,
        series_uid=series_uid,
        transfer_syntax=ts,
        patient_id=_text(attrs.text("PatientID")),
        issuer_of_patient_id=_text(attrs.text("IssuerOfPatientID")),
        patient_name=_text(attrs.text("PatientName")),
        patient_birth_date=_text(attrs.text("PatientBirthDate")),
        patient_sex=_text(attrs.text("PatientSex")),
        study_date=parse_da(_text(attrs.text("StudyDate"))),
        study_time=_text(attrs.text("StudyTime")),
        accession_number=_text(attrs.text("AccessionNumber")),
        study_id=_text(attrs.text("StudyID")),
        study_description=_text(attrs.text("StudyDescription")),
        referring_physician=_text(attrs.text("ReferringPhysicianName")),
        modality=_text(attrs.text("Modality")),
        series_number=_int(attrs.number("SeriesNumber")),
        series_description=_text(attrs.text("SeriesDescription")),
        body_part=_text(attrs.text("BodyPartExamined")),
        instance_number=_int(attrs.number("InstanceNumber")),
        rows=_int(attrs.number("Rows")),
        columns=_int(attrs.number("Columns")),
        number_of_frames=_int(attrs.number("NumberOfFrames")),
        has_pixel_data=bool(getattr(ds, "_vna_has_pixel_data", False)),
    )


def dicom_json(ds: Dataset) -> dict[str, Any]:
    """The header as DICOM JSON (PS3.18 F.2) for the catalogue, without bulk data.

    Element by element rather than ``Dataset.to_json_dict`` on a filtered copy: building the
    copy cost as much as the conversion itself.  Raw elements are read by ``fast_json``
    (pydicom's conversion costs more than the copy did); a data set as parsed is left so, a
    changed one converted by pydicom (see ``_as_parsed``).
    """
    out: dict[str, Any] = {}
    try:
        with _as_parsed(ds) as parsed:
            if parsed:
                _fast_dicom_json(ds, out)
                return out
        if fast_json.usable():
            # A changed data set is written again from its elements, converted by pydicom as
            # this function used to leave every one of them (see _as_parsed): the JSON is
            # still read raw, which costs less than converting it from pydicom's values.
            _fast_dicom_json(ds, out)
            for _elem in ds.iterall():
                pass
            return out
        for elem in ds:
            tag = int(elem.tag)
            if _left_out(tag, elem):
                continue
            out[f"{tag:08X}"] = elem.to_json_dict(
                bulk_data_element_handler=None, bulk_data_threshold=BULK_THRESHOLD
            )
    except Exception as exc:
        raise InvalidInstance(f"cannot convert header to DICOM JSON: {_first_line(exc)}") from exc
    return out


def _fast_dicom_json(ds: Dataset, out: dict[str, Any]) -> None:
    reader = fast_json.Reader(ds)
    elements = ds._dict
    for tag in sorted(elements, key=int):  # BaseTag's own ordering is slow Python
        raw = elements[tag]
        if isinstance(raw, RawDataElement) and tag not in _PIXEL_DATA_TAGS:
            doc = reader.element_json(raw, BULK_THRESHOLD)
            if doc is fast_json.BULK:
                continue
            if doc is not None:
                out[f"{tag:08X}"] = doc
                continue
        # pydicom converts what fast_json does not read, Pixel Data too: a value it cannot
        # convert refuses the instance, as before.
        elem = ds[tag]
        if not _left_out(tag, elem):
            out[f"{tag:08X}"] = fast_json.converted_json(elem, BULK_THRESHOLD)


def _left_out(tag: int, elem: DataElement) -> bool:
    """Pixel data and bulk binary values stay out of the catalogue's DICOM JSON."""
    if tag in _PIXEL_DATA_TAGS:
        return True
    if elem.VR in _BULK_VRS:
        value = elem.value
        return isinstance(value, bytes | bytearray) and len(value) > BULK_THRESHOLD
    return False


@contextmanager
def _as_parsed(ds: Dataset) -> Iterator[bool]:
    """Whether ``ds`` is as ``read_dataset`` parsed it, and pydicom's settings are the ones
    fast_json assumes: its raw elements may then be read raw, and stay raw.

    pydicom writes a raw element's bytes as they are and a converted one from its value (and
    cannot write some raw elements at all, such as implicit VR ones in a data set it read as
    explicit).  A data set as parsed is stored as received, never written; one the archive has
    changed is written again (rewrite.py), so it is converted by pydicom as before and what is
    written stays what it was.  Each change replaces or removes an element (and records it in
    a new Original Attributes Sequence): what was parsed is then no longer all there.

    pydicom replaces each element it converts meanwhile (the private creator it looks up for a
    private element's VR, the elements fast_json leaves to it): the parsed ones go back, so
    that the next reader (dicom_json after extract_header) finds the data set as parsed.
    """
    parsed: dict[BaseTag, DataElement | RawDataElement] | None = getattr(ds, _PARSED, None)
    if parsed is None or not fast_json.usable() or not _unchanged(ds._dict, parsed):
        yield False
        return
    try:
        yield True
    finally:
        ds._dict.update(parsed)


def _unchanged(
    elements: MutableMapping[BaseTag, DataElement | RawDataElement],
    parsed: dict[BaseTag, DataElement | RawDataElement],
) -> bool:
    return len(elements) == len(parsed) and all(
        parsed.get(tag) is elem for tag, elem in elements.items()
    )


def parse_da(value: str) -> dt.date | None:
    """A DA value (YYYYMMDD, or the ACR-NEMA YYYY.MM.DD) as a date; None if absent or invalid."""
    v = value.strip().replace(".", "")
    if len(v) != 8 or not v.isdigit():
        return None
    try:
        return dt.date(int(v[:4]), int(v[4:6]), int(v[6:]))
    except ValueError:
        return None


# --- helpers -------------------------------------------------------------------------------


class _Attributes:
    """``ds.get(keyword)`` for the header, read from the raw element where ``fast`` allows it
    and ``fast_json`` knows its form.  What it gives stands in for pydicom's value in
    ``_uid``, ``_text`` and ``_int``: the same text or number, and an absent attribute as an
    empty one, which they treat alike.
    """

    def __init__(self, ds: Dataset, fast: bool) -> None:
        self.ds = ds
        self.reader = fast_json.Reader(ds) if fast else None

    def text(self, keyword: str, read: Callable[[str], Any] | None = None) -> Any:
        if self.reader is not None:
            raw = self.ds._dict.get(_TAGS[keyword], _ABSENT)
            if raw is _ABSENT:
                return ""
            if isinstance(raw, RawDataElement) and (text := self.reader.text(raw)) is not None:
                return text
        return (read or self.ds.get)(keyword)

    def number(self, keyword: str) -> Any:
        if self.reader is not None:
            raw = self.ds._dict.get(_TAGS[keyword], _ABSENT)
            if raw is _ABSENT:
                return None
            if isinstance(raw, RawDataElement):
                number = self.reader.integer(raw)
                if number is not fast_json.SLOW:
                    return number
        return self.ds.get(keyword)


_ABSENT: Any = object()
_TAGS: dict[str, BaseTag] = {
    keyword: Tag(keyword)
    for keyword in (
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "TransferSyntaxUID",
        "MediaStorageSOPClassUID",
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "BodyPartExamined",
        "InstanceNumber",
        "Rows",
        "Columns",
        "NumberOfFrames",
    )
}


def _has(ds: Dataset, keyword: str) -> bool:
    """``keyword in ds`` without its keyword lookup."""
    return _TAGS[keyword] in ds._dict if isinstance(ds, Dataset) else keyword in ds


def _uid(value: Any, keyword: str) -> str:
    if value is None or str(value).strip() == "":
        raise InvalidInstance(f"required attribute {keyword} is missing")
    text = str(value).strip().rstrip("\x00")
    if not is_valid_uid(text):
        raise InvalidInstance(f"{keyword} is not a valid UID: {text[:80]!r}")
    return text


def _text(value: Any) -> str:
    if type(value) is str:  # what fast_json gives: skips the ABC check below
        return value.strip().rstrip("\x00")
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip().rstrip("\x00")


def _int(value: Any) -> int | None:
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


def _check_framing_complete(f: BinaryIO, meta: Dataset, file_size: int) -> bool:
    """Walk the framing (tag, VR, length) of every element from the file meta to the end.

    pydicom stops quietly at end of file and accepts values shorter than their declared
    length, so a file cut anywhere (in the header, in Pixel Data, in elements after it) would
    otherwise parse.  Values of defined length are skipped, not read.  Returns whether the
    data set has Pixel Data; raises InvalidInstance if the file ends early.
    """
    f.seek(132)  # PS3.10 7.1: 128-byte preamble and "DICM", which pydicom has checked
    _Framing(f, file_size, little=True).elements(file_size, implicit=False, stop_group=0x0002)
    if "TransferSyntaxUID" not in meta:
        return False  # extract_header refuses the file with a clearer reason
    ts = UID(str(meta.TransferSyntaxUID))
    if ts == pydicom.uid.DeflatedExplicitVRLittleEndian:
        # PS3.5 A.5: everything after the file meta is one raw deflate stream.
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        data = inflater.decompress(f.read())
        if not inflater.eof:
            raise InvalidInstance("truncated DICOM file: the deflated data set ends early")
        f, file_size = io.BytesIO(data), len(data)
    framing = _Framing(f, file_size, little=ts != pydicom.uid.ExplicitVRBigEndian)
    # The encoding found, not the one the meta header claims: some writers encode implicit VR
    # under an explicit transfer syntax (and vice versa), and pydicom reads them anyway.
    implicit = framing.looks_implicit(default=ts == pydicom.uid.ImplicitVRLittleEndian)
    return framing.elements(file_size, implicit)


def _open(source: Path | bytes) -> BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _raise_if_truncated(f: BinaryIO, file_size: int) -> None:
    try:
        end = data_set_offset(f)
        f.seek(0)
        meta = pydicom.dcmread(io.BytesIO(f.read(end))).file_meta
        _check_framing_complete(f, meta, file_size)
    except InvalidInstance as exc:
        if str(exc).startswith("truncated"):
            raise
    except Exception:
        return  # no clearer reason than pydicom's own


class _Framing:
    """Element framing per PS3.5 7.1 (elements), 7.5 (sequences, items) and A.4 (fragments)."""

    def __init__(self, f: BinaryIO, size: int, little: bool) -> None:
        self.f = f
        self.size = size
        self.endian = "<" if little else ">"

    def _read(self, n: int, end: int, what: str) -> bytes:
        data = self.f.read(n)
        if len(data) < n or self.f.tell() > end:
            if end >= self.size:
                raise InvalidInstance(f"truncated DICOM file (ends inside {what})")
            raise InvalidInstance(f"malformed DICOM data: {what} crosses the end of its item")
        return data

    def looks_implicit(self, default: bool) -> bool:
        """pydicom's test: an explicit VR is two upper-case letters after the tag."""
        pos = self.f.tell()
        head = self.f.read(6)
        self.f.seek(pos)
        if len(head) < 6:
            return default
        return not (0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B)

    def elements(
        self,
        end: int,
        implicit: bool,
        *,
        delimited: bool = False,
        depth: int = 0,
        stop_group: int | None = None,
    ) -> bool:
        """Walk a data set to ``end`` (or its item delimiter); True if it holds Pixel Data."""
        has_pixels = False
        while True:
            pos = self.f.tell()
            if pos >= end:
                if delimited:
                    raise InvalidInstance("truncated DICOM file (a sequence item has no end)")
                return has_pixels
            head = self._read(8, end, "an element header")
            group, elem = struct.unpack(self.endian + "HH", head[:4])
            tag = (group << 16) | elem
            if stop_group is not None and group != stop_group:
                self.f.seek(pos)
                return has_pixels
            if tag == _ITEM_DELIMITER:
                if delimited:
                    return has_pixels
                raise InvalidInstance(f"malformed DICOM data: item delimiter at offset {pos}")
            vr = head[4:6]
            if implicit or not (b"AA" <= vr <= b"ZZ"):
                # Implicit VR, or an implicit element inside an explicit data set (pydicom
                # reads those too).
                (length,) = struct.unpack(self.endian + "L", head[4:8])
            elif vr in _LONG_LENGTH_VRS:
                (length,) = struct.unpack(
                    self.endian + "L", self._read(4, end, "an element header")
                )
            else:
                (length,) = struct.unpack(self.endian + "H", head[6:8])
            if depth == 0 and tag in _PIXEL_DATA_TAGS:
                has_pixels = True
            if length == 0xFFFFFFFF:
                self._sequence(end, implicit, depth + 1)
                continue
            start = self.f.tell()
            if start + length > end:
                if end < self.size:
                    raise InvalidInstance(
                        f"malformed DICOM data: element ({group:04X},{elem:04X})"
                        " crosses the end of its item"
                    )
                raise InvalidInstance(
                    f"truncated DICOM file: element ({group:04X},{elem:04X}) declares"
                    f" {length} bytes, {max(0, end - start)} present"
                )
            self.f.seek(length, 1)

    def _sequence(self, end: int, implicit: bool, depth: int) -> None:
        """Items up to the sequence delimiter: an undefined-length SQ or encapsulated pixels."""
        if depth > _MAX_DEPTH:
            raise InvalidInstance(f"malformed DICOM data: sequences nested over {_MAX_DEPTH} deep")
        while True:
            head = self._read(8, end, "a sequence")
            group, elem, length = struct.unpack(self.endian + "HHL", head)
            tag = (group << 16) | elem
            if tag == _SEQ_DELIMITER:
                return
            if tag != _ITEM:
                raise InvalidInstance(
                    f"malformed DICOM data: ({group:04X},{elem:04X}) where a sequence item"
                    " (PS3.5 7.5) was expected"
                )
            if length == 0xFFFFFFFF:
                # Items of an explicit VR data set may be implicit (PS3.5 6.2.2, UN as SQ).
                item_implicit = implicit or self.looks_implicit(default=False)
                self.elements(end, item_implicit, delimited=True, depth=depth)
                continue
            if self.f.tell() + length > end:
                raise InvalidInstance(
                    "truncated DICOM file: a sequence item or Pixel Data fragment is incomplete"
                    if end >= self.size
                    else "malformed DICOM data: an item crosses the end of its parent item"
                )
            self.f.seek(length, 1)
