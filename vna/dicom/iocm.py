"""IOCM rejection notes: recognise one in a header, and build one (pure; no I/O).

IHE RAD TF-1 (Imaging Object Change Management) withdraws instances with a Key Object
Selection Document (PS3.3 A.35.4, SOP Class 1.2.840.10008.5.1.4.1.1.88.59) whose document
title, the Concept Name Code Sequence of its root CONTAINER (PS3.3 C.17.3), is one of the
rejection titles of PS3.16 CID 7010 "Key Object Selection Document Title" (IHE RAD TF-3
4.66.4.1.3, RAD-66 Rejection Note Stored).  The
instances it withdraws are those of its Current Requested Procedure Evidence Sequence
(PS3.3 C.17.2.1: Study -> Referenced Series Sequence -> Referenced SOP Sequence).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from vna.errors import InvalidRequest

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"

#: The IOCM rejection titles among PS3.16 CID 7010 "Key Object Selection Document Title" (the
#: four IHE RAD TF-3 4.66.4.1.3 names; scheme DCM).  CID 7011 holds the finer quality reasons
#: a note may carry in its content, which do not change what is withdrawn.
REJECTION_CODES: dict[str, str] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}

# DICOM JSON keys (PS3.18 F.2) of the elements read here.
_SOP_CLASS = "00080016"
_SOP_INSTANCE = "00080018"
_STUDY = "0020000D"
_SERIES = "0020000E"
_CONCEPT_NAME = "0040A043"
_CODE_VALUE = "00080100"
_SCHEME = "00080102"
_EVIDENCE = "0040A375"
_REF_SERIES = "00081115"
_REF_SOP = "00081199"
_REF_SOP_CLASS = "00081150"
_REF_SOP_INSTANCE = "00081155"


@dataclass(frozen=True)
class Reference:
    """One instance a note names."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str = ""
    #: Has pixel data: referenced as IMAGE rather than COMPOSITE (PS3.3 C.18.3, C.18.4).
    image: bool = True


@dataclass(frozen=True)
class RejectionNote:
    sop_uid: str
    study_uid: str
    series_uid: str
    code: str
    meaning: str
    references: tuple[Reference, ...]

    @property
    def own_study(self) -> tuple[Reference, ...]:
        """The references within the note's own study: the only ones the archive applies (its
        own rule, not IHE's), so a note filed in one patient's study cannot withdraw another
        patient's images; a PACS files a rejection note in the study it rejects in."""
        return tuple(r for r in self.references if r.study_uid == self.study_uid)


def _first(element: Mapping[str, Any] | None) -> Any:
    if not element:
        return None
    values = element.get("Value")
    return values[0] if isinstance(values, list) and values else None


def _items(element: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not element:
        return []
    values = element.get("Value")
    return [v for v in values if isinstance(v, Mapping)] if isinstance(values, list) else []


def rejection_note(header: Mapping[str, Any]) -> RejectionNote | None:
    """The rejection a stored header (DICOM JSON) states, or None when it is not an IOCM
    rejection note (another SOP class, another document title, or no references)."""
    if _first(header.get(_SOP_CLASS)) != KEY_OBJECT_SELECTION:
        return None
    title = _items(header.get(_CONCEPT_NAME))
    if not title:
        return None
    code = str(_first(title[0].get(_CODE_VALUE)) or "")
    scheme = str(_first(title[0].get(_SCHEME)) or "")
    if scheme != "DCM" or code not in REJECTION_CODES:
        return None
    refs: list[Reference] = []
    for study in _items(header.get(_EVIDENCE)):
        study_uid = str(_first(study.get(_STUDY)) or "")
        for series in _items(study.get(_REF_SERIES)):
            series_uid = str(_first(series.get(_SERIES)) or "")
            for sop in _items(series.get(_REF_SOP)):
                sop_uid = str(_first(sop.get(_REF_SOP_INSTANCE)) or "")
                if study_uid and series_uid and sop_uid:
                    sop_class = str(_first(sop.get(_REF_SOP_CLASS)) or "")
                    refs.append(Reference(study_uid, series_uid, sop_uid, sop_class))
    if not refs:
        return None
    return RejectionNote(
        sop_uid=str(_first(header.get(_SOP_INSTANCE)) or ""),
        study_uid=str(_first(header.get(_STUDY)) or ""),
        series_uid=str(_first(header.get(_SERIES)) or ""),
        code=code,
        meaning=REJECTION_CODES[code],
        references=tuple(dict.fromkeys(refs)),
    )


def parse_code(text: str) -> str:
    """``113001^DCM`` (dcm4chee's path segment: code value ^ coding scheme) -> ``113001``."""
    value, _, scheme = text.partition("^")
    if scheme != "DCM" or value not in REJECTION_CODES:
        known = ", ".join(f"{c}^DCM ({m})" for c, m in REJECTION_CODES.items())
        raise InvalidRequest(f"{text!r} is not a rejection code; one of {known}")
    return value


#: The Patient and General Study module attributes a note copies from the study it rejects in
#: (PS3.3 A.35.4: the KOS is an instance of that study, under that patient).
STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def build_rejection_note(
    study: Mapping[str, str],
    references: Sequence[Reference],
    code: str,
    *,
    now: dt.datetime,
    manufacturer: str = "VNA",
) -> Dataset:
    """A Key Object Selection Document rejecting ``references`` for ``code`` (CID 7010), in
    the study ``study`` describes (``STUDY_KEYWORDS``), ready to be written as Part 10.

    Modules of PS3.3 A.35.4: Patient, General Study, Key Object Document Series (C.17.6),
    General Equipment, Key Object Document (C.17.6.2, with the evidence), SR Document Content
    (C.17.3) following TID 2010 (root CONTAINER titled by the code, one IMAGE or COMPOSITE
    item per reference), SOP Common.
    """
    if code not in REJECTION_CODES:
        raise InvalidRequest(f"{code} is not a rejection code of CID 7010")
    if not references:
        raise InvalidRequest("a rejection note needs at least one instance to reject")
    ds = Dataset()
    for keyword in STUDY_KEYWORDS:
        setattr(ds, keyword, study.get(keyword, ""))
    ds.SOPClassUID = KEY_OBJECT_SELECTION
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "KO"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9999
    ds.SeriesDescription = REJECTION_CODES[code]
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()  # type 2 (C.17.6.1)
    ds.Manufacturer = manufacturer
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = DicomSequence([_code(code)])
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = DicomSequence([template])
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(references)
    ds.ContentSequence = DicomSequence([_content_item(r) for r in references])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    return ds


def _code(code: str) -> Dataset:
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = REJECTION_CODES[code]
    return item


def _evidence(references: Sequence[Reference]) -> DicomSequence:
    studies: dict[str, dict[str, list[Reference]]] = {}
    for r in references:
        studies.setdefault(r.study_uid, {}).setdefault(r.series_uid, []).append(r)
    items = []
    for study_uid, series in studies.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        series_items = []
        for series_uid, refs in series.items():
            s = Dataset()
            s.SeriesInstanceUID = series_uid
            s.ReferencedSOPSequence = DicomSequence([_sop(r) for r in refs])
            series_items.append(s)
        study.ReferencedSeriesSequence = DicomSequence(series_items)
        items.append(study)
    return DicomSequence(items)


def _sop(r: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = r.sop_class_uid
    item.ReferencedSOPInstanceUID = r.sop_uid
    return item


def _content_item(r: Reference) -> Dataset:
    # TID 2010: CONTAINS an IMAGE reference for an image, COMPOSITE for anything else
    # (PS3.3 C.18.3 reserves COMPOSITE for instances that are not images or waveforms).
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "IMAGE" if r.image else "COMPOSITE"
    item.ReferencedSOPSequence = DicomSequence([_sop(r)])
    return item
