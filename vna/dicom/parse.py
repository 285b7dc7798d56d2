"""Read what the archive needs from a DICOM Part 10 file without decoding pixel data.

The header is parsed with pydicom up to Pixel Data; the framing of every element in the file
is then walked (values skipped, not read) to prove the file is complete, because pydicom parses
a truncated upload cleanly and it would be acknowledged with data missing.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import UID

from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidInstance, SopClassMismatch

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


def read_dataset(path: Path, *, check_complete: bool = True) -> Dataset:
    """Parse a Part 10 file's header (pixel data neither read nor decoded)."""
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except InvalidDicomError:
                raise
            except Exception:
                # pydicom trips over a cut-short file in many ways ("No tag to read at ..."):
                # name the real problem when the framing shows it.
                if check_complete:
                    _raise_if_truncated(f, path, size)
                raise
            ds._vna_has_pixel_data = False
            if check_complete:
                has_pixels = _check_framing_complete(f, ds.file_meta, size)
                ds._vna_has_pixel_data = has_pixels
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
    if meta is None or "TransferSyntaxUID" not in meta:
        raise InvalidInstance("no File Meta Information (PS3.10 7.1): transfer syntax unknown")
    try:
        sop_class = _uid(ds, "SOPClassUID")
        sop_instance = _uid(ds, "SOPInstanceUID")
        study_uid = _uid(ds, "StudyInstanceUID")
        series_uid = _uid(ds, "SeriesInstanceUID")
        ts = str(meta.TransferSyntaxUID)
        media_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
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
            patient_id=_text(ds, "PatientID"),
            issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
            patient_name=_text(ds, "PatientName"),
            patient_birth_date=_text(ds, "PatientBirthDate"),
            patient_sex=_text(ds, "PatientSex"),
            study_date=parse_da(_text(ds, "StudyDate")),
            study_time=_text(ds, "StudyTime"),
            accession_number=_text(ds, "AccessionNumber"),
            study_id=_text(ds, "StudyID"),
            study_description=_text(ds, "StudyDescription"),
            referring_physician=_text(ds, "ReferringPhysicianName"),
            modality=_text(ds, "Modality"),
            series_number=_int(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            body_part=_text(ds, "BodyPartExamined"),
            instance_number=_int(ds, "InstanceNumber"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            number_of_frames=_int(ds, "NumberOfFrames"),
            has_pixel_data=bool(getattr(ds, "_vna_has_pixel_data", False)),
        )
    except InvalidInstance:
        raise
    except Exception as exc:  # pydicom raises many types on malformed values
        raise InvalidInstance(f"cannot read DICOM attributes: {_first_line(exc)}") from exc


def dicom_json(ds: Dataset) -> dict[str, Any]:
    """The header as DICOM JSON (PS3.18 F.2) for the catalogue, without bulk data.

    Element by element rather than ``Dataset.to_json_dict`` on a filtered copy: building the
    copy cost as much as the conversion itself.
    """
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


def _uid(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        raise InvalidInstance(f"required attribute {keyword} is missing")
    text = str(value).strip().rstrip("\x00")
    if not is_valid_uid(text):
        raise InvalidInstance(f"{keyword} is not a valid UID: {text[:80]!r}")
    return text


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip().rstrip("\x00")


def _int(ds: Dataset, keyword: str) -> int | None:
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


def _raise_if_truncated(f: BinaryIO, path: Path, file_size: int) -> None:
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
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
