"""Write a Part 10 file whose header was changed, copying everything else byte for byte.

The new file is: the original preamble and File Meta Information (PS3.10 7.1) unchanged, the
changed header encoded as the original data set was (implicit or explicit VR, little or big
endian: the transfer syntax is kept), then the original bytes from the Pixel Data element to
the end of the file.  Pixel data is never decoded nor held in memory: its byte range is copied
in chunks.

A deflated data set (PS3.5 A.5) is one compressed stream that cannot be spliced; it is read
whole and written again (such files are rare and small).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from vna.dicom.parse import data_set_offset
from vna.errors import InvalidInstance

_CHUNK = 1 << 20
# Pixel Data, Float and Double Float Pixel Data: where pydicom stops with stop_before_pixels.
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


@dataclass(frozen=True)
class Written:
    #: Of the whole file: its content address.
    sha256: str
    #: Of the data set (after the File Meta Information): what a resend of it is known by.
    data_set_sha256: str
    size: int


def write_with_header(source: Path, target: Path, header: Dataset) -> Written:
    """Write ``source`` to ``target`` with ``header`` (parsed from ``source`` with
    ``stop_before_pixels``, then changed) in place of its header."""
    ts = UID(str(header.file_meta.TransferSyntaxUID))
    if ts == DeflatedExplicitVRLittleEndian:
        return _write_deflated(source, target, header)
    implicit, little = header.original_encoding
    if implicit is None or little is None:
        implicit, little = ts.is_implicit_VR, ts != ExplicitVRBigEndian
    encoded = DicomBytesIO()
    encoded.is_implicit_VR = implicit
    encoded.is_little_endian = little
    try:
        write_dataset(encoded, header)
    except Exception as exc:  # pydicom raises many types on values it cannot encode
        raise InvalidInstance(f"cannot encode the normalised header: {exc}") from exc
    whole, data_set = hashlib.sha256(), hashlib.sha256()
    size = 0
    with open(source, "rb") as src, open(target, "wb") as out:
        start = data_set_offset(src)
        tail = _pixel_data_offset(src)
        src.seek(0)
        meta = src.read(start)
        for chunk in (meta, encoded.getvalue()):
            out.write(chunk)
            whole.update(chunk)
            size += len(chunk)
        data_set.update(encoded.getvalue())
        src.seek(tail)
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            whole.update(chunk)
            data_set.update(chunk)
            size += len(chunk)
    return Written(whole.hexdigest(), data_set.hexdigest(), size)


def _pixel_data_offset(f: BinaryIO) -> int:
    """Where the Pixel Data element starts (the end of the file when there is none).

    pydicom, told to stop before pixels, leaves the file at the start of that element.
    """
    f.seek(0)
    pydicom.dcmread(f, stop_before_pixels=True)
    pos = f.tell()
    head = f.read(4)
    f.seek(pos)
    if len(head) < 4:
        return pos
    group, elem = int.from_bytes(head[:2], "little"), int.from_bytes(head[2:], "little")
    if (group << 16 | elem) not in _PIXEL_TAGS:
        group, elem = int.from_bytes(head[:2], "big"), int.from_bytes(head[2:], "big")
        if (group << 16 | elem) not in _PIXEL_TAGS:
            raise InvalidInstance("cannot find where the header ends before Pixel Data")
    return pos


def _write_deflated(source: Path, target: Path, header: Dataset) -> Written:
    full = pydicom.dcmread(source)
    for elem in full:
        if int(elem.tag) >= 0x7FE00008:
            header[elem.tag] = elem
    header.file_meta = full.file_meta
    buf = io.BytesIO()
    try:
        header.save_as(buf, enforce_file_format=True)
    except Exception as exc:
        raise InvalidInstance(f"cannot encode the normalised header: {exc}") from exc
    data = buf.getvalue()
    target.write_bytes(data)
    start = data_set_offset(io.BytesIO(data))
    return Written(
        hashlib.sha256(data).hexdigest(), hashlib.sha256(data[start:]).hexdigest(), len(data)
    )
