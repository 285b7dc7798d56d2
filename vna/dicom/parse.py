"""Read what the archive needs from a DICOM Part 10 file without decoding pixel data.

The header is parsed with pydicom up to Pixel Data; the pixel data element's framing is then
walked (not read) to prove the file is complete, because a truncated upload would otherwise
parse cleanly and be acknowledged with pixels missing.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidInstance, SopClassMismatch

#: Binary VRs whose values above this size are left out of the catalogue's metadata copy.
BULK_THRESHOLD = 64 * 1024
_BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_ITEM = 0xFFFEE000
_SEQ_DELIMITER = 0xFFFEE0DD
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UN", b"UC", b"UR", b"UT"}


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
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            if check_complete:
                _check_pixel_data_complete(f, ds, path.stat().st_size)
    except InvalidDicomError as exc:
        raise InvalidInstance(f"not a DICOM Part 10 file: {_first_line(exc)}") from exc
    except InvalidInstance:
        raise
    except (EOFError, struct.error) as exc:
        raise InvalidInstance("truncated DICOM file (ends inside the header)") from exc
    except (ValueError, KeyError, TypeError, OverflowError, NotImplementedError) as exc:
        raise InvalidInstance(f"cannot parse DICOM header: {_first_line(exc)}") from exc
    except OSError as exc:
        raise InvalidInstance(f"cannot read DICOM data: {_first_line(exc)}") from exc
    return ds


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
    """The header as DICOM JSON (PS3.18 F.2) for the catalogue, without bulk data."""
    slim = Dataset()
    for elem in ds:
        if int(elem.tag) in _PIXEL_DATA_TAGS:
            continue
        value = elem.value
        if elem.VR in _BULK_VRS and isinstance(value, bytes | bytearray):
            if len(value) > BULK_THRESHOLD:
                continue
        slim.add(elem)
    try:
        return slim.to_json_dict(bulk_data_threshold=BULK_THRESHOLD)
    except Exception as exc:
        raise InvalidInstance(f"cannot convert header to DICOM JSON: {_first_line(exc)}") from exc


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


def _check_pixel_data_complete(f: BinaryIO, ds: Dataset, file_size: int) -> None:
    """Walk the Pixel Data element's framing from where the header parse stopped.

    Sets ``ds._vna_has_pixel_data``.  Raises InvalidInstance if the file ends early.
    """
    ds._vna_has_pixel_data = False  # type: ignore[attr-defined]
    meta = ds.file_meta
    ts = UID(str(meta.get("TransferSyntaxUID", "")))
    if ts == pydicom.uid.DeflatedExplicitVRLittleEndian:
        # The deflated stream has been inflated by pydicom; zlib reports truncation itself.
        return
    pos = f.tell()
    if pos >= file_size:
        return
    # The encoding pydicom actually found, not the one the meta header claims: some writers
    # encode implicit VR under an explicit transfer syntax, and pydicom reads them anyway.
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        little = ts != pydicom.uid.ExplicitVRBigEndian
        implicit = ts == pydicom.uid.ImplicitVRLittleEndian
    endian = "<" if little else ">"
    head = f.read(8)
    if len(head) < 8:
        raise InvalidInstance("truncated DICOM file (ends inside an element header)")
    group, elem = struct.unpack(endian + "HH", head[:4])
    tag = (group << 16) | elem
    if tag not in _PIXEL_DATA_TAGS:
        return  # stopped before something other than pixel data: nothing more to prove
    ds._vna_has_pixel_data = True  # type: ignore[attr-defined]
    if implicit:
        (length,) = struct.unpack(endian + "L", head[4:8])
    else:
        vr = head[4:6]
        if vr in _LONG_LENGTH_VRS:
            more = f.read(4)
            if len(more) < 4:
                raise InvalidInstance("truncated DICOM file (ends inside the Pixel Data header)")
            (length,) = struct.unpack(endian + "L", more)
        else:
            (length,) = struct.unpack(endian + "H", head[6:8])
    start = f.tell()
    if length != 0xFFFFFFFF:
        if start + length > file_size:
            raise InvalidInstance(
                f"truncated DICOM file: Pixel Data declares {length} bytes,"
                f" {max(0, file_size - start)} present"
            )
        return
    # Encapsulated pixel data (PS3.5 A.4): items of defined length, then a sequence delimiter.
    while True:
        item = f.read(8)
        if len(item) < 8:
            raise InvalidInstance("truncated DICOM file: encapsulated Pixel Data has no end")
        g, e, item_len = struct.unpack(endian + "HHL", item)
        item_tag = (g << 16) | e
        if item_tag == _SEQ_DELIMITER:
            return
        if item_tag != _ITEM or item_len == 0xFFFFFFFF:
            raise InvalidInstance("malformed encapsulated Pixel Data (PS3.5 A.4 item expected)")
        if f.tell() + item_len > file_size:
            raise InvalidInstance("truncated DICOM file: a Pixel Data fragment is incomplete")
        f.seek(item_len, 1)
