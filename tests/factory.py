"""Realistic DICOM instances made in code (CT series of 16-bit slices), and STOW-RS bodies."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_study(
    *,
    patient_id: str = "PAT001",
    patient_name: str = "DOE^JANE",
    issuer: str | None = None,
    series: int = 2,
    slices: int = 3,
    size: int = 64,
    study_uid: str | None = None,
    accession: str = "ACC001",
    study_date: str = "20240115",
    modality: str = "CT",
) -> list[Dataset]:
    """A study of ``series`` x ``slices`` CT images of size x size 16-bit pixels."""
    study_uid = study_uid or generate_uid()
    out = []
    rng = np.random.default_rng(abs(hash(study_uid)) % 2**32)
    for s in range(series):
        series_uid = generate_uid()
        for i in range(slices):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            sop_uid = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = sop_uid
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.PatientID = patient_id
            ds.PatientName = patient_name
            if issuer is not None:
                ds.IssuerOfPatientID = issuer
            ds.PatientBirthDate = "19700101"
            ds.PatientSex = "F"
            ds.StudyDate = study_date
            ds.StudyTime = "101500"
            ds.AccessionNumber = accession
            ds.StudyID = "1"
            ds.StudyDescription = "CT CHEST"
            ds.ReferringPhysicianName = "SMITH^JOHN"
            ds.Modality = modality
            ds.SeriesNumber = s + 1
            ds.SeriesDescription = f"AXIAL {s + 1}"
            ds.InstanceNumber = i + 1
            ds.ImagePositionPatient = [0, 0, float(i)]
            ds.PixelSpacing = [0.7, 0.7]
            ds.SliceThickness = 1.0
            ds.Rows = size
            ds.Columns = size
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = 16
            ds.BitsStored = 12
            ds.HighBit = 11
            ds.PixelRepresentation = 0
            ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
            out.append(ds)
    return out


def part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def stow_body(parts: Sequence[bytes]) -> tuple[bytes, str]:
    """A multipart/related body of application/dicom parts and its Content-Type."""
    boundary = uuid.uuid4().hex
    chunks = []
    for data in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), content_type


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The parts' payloads of a multipart/related response."""
    boundary = None
    for piece in content_type.split(";"):
        name, _, value = piece.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    assert boundary, content_type
    delimiter = b"--" + boundary.encode()
    parts = []
    for raw in body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break
        _head, _, payload = raw.partition(b"\r\n\r\n")
        parts.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return parts
