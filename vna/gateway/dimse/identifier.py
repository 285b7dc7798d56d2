"""Query/Retrieve identifiers (PS3.4 C.4, C.6): levels, retrieve keys, C-FIND responses.

Pure: no I/O.  Matching itself is :mod:`vna.dicom.qido_params`'s (the rules QIDO-RS shares with
C-FIND); this module adds what is particular to DIMSE: the information models and their levels,
the unique keys a C-MOVE or C-GET names, and the shape of a C-FIND response identifier.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidRequest
from vna.retrieve import RetrieveKeys

log = logging.getLogger(__name__)

# PS3.4 C.6.1 (Patient Root) and C.6.2 (Study Root) Query/Retrieve Information Models.
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

_PATIENT_ROOT_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_STUDY_ROOT_LEVELS = ("STUDY", "SERIES", "IMAGE")
_MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    PATIENT_ROOT_FIND: ("Patient Root", _PATIENT_ROOT_LEVELS),
    PATIENT_ROOT_MOVE: ("Patient Root", _PATIENT_ROOT_LEVELS),
    PATIENT_ROOT_GET: ("Patient Root", _PATIENT_ROOT_LEVELS),
    STUDY_ROOT_FIND: ("Study Root", _STUDY_ROOT_LEVELS),
    STUDY_ROOT_MOVE: ("Study Root", _STUDY_ROOT_LEVELS),
    STUDY_ROOT_GET: ("Study Root", _STUDY_ROOT_LEVELS),
}

#: The unique key of each level (PS3.4 C.6.1.1, C.6.2.1), as a DICOM JSON key.
UNIQUE_KEYS = {
    "PATIENT": "00100020",  # PatientID
    "STUDY": "0020000D",  # StudyInstanceUID
    "SERIES": "0020000E",  # SeriesInstanceUID
    "IMAGE": "00080018",  # SOPInstanceUID
}

_SPECIFIC_CHARACTER_SET = 0x00080005
_QUERY_RETRIEVE_LEVEL = 0x00080052
_RETRIEVE_AE_TITLE = 0x00080054
_INSTANCE_AVAILABILITY = "00080056"
_PATIENT_ID = 0x00100020
_ISSUER_OF_PATIENT_ID = 0x00100021
#: Patient level attributes the archive computes (PS3.4 C.6.1.1.2, Table C.6-1).
PATIENT_COUNT_TAGS = frozenset({"00201200", "00201202", "00201204"})
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def query_level(sop_class_uid: str, identifier: Dataset) -> str:
    """The identifier's Query/Retrieve Level (0008,0052), checked against the information
    model the request was sent under (PS3.4 C.6.1.1.1, C.6.2.1.1)."""
    model = _MODELS.get(str(sop_class_uid))
    if model is None:
        raise InvalidRequest(f"information model {sop_class_uid} is not supported")
    name, levels = model
    level = _text(identifier, "QueryRetrieveLevel").upper()
    if not level:
        raise InvalidRequest("the identifier has no QueryRetrieveLevel (0008,0052)")
    if level not in levels:
        raise InvalidRequest(
            f"QueryRetrieveLevel {level!r} is not a level of the {name} model ({', '.join(levels)})"
        )
    return level


_REQUIRED_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


def retrieve_keys(sop_class_uid: str, identifier: Dataset) -> RetrieveKeys:
    """The unique keys of a C-MOVE or C-GET identifier (PS3.4 C.4.2.2.1, C.4.3.2.1).

    Keys at and above the level are used; the key of the level itself is required and may
    list several UIDs.  Keys below the level are ignored.  Keys above it are optional: the
    archive finds an instance, series or study by its UID alone.
    """
    level = query_level(sop_class_uid, identifier)
    depth = _PATIENT_ROOT_LEVELS.index(level)
    patient_id = _text(identifier, "PatientID") or None
    if patient_id is not None and any(c in patient_id for c in "*?\\"):
        raise InvalidRequest("PatientID of a retrieve must be one value without wildcards")
    keys = RetrieveKeys(
        level=level,
        patient_id=patient_id,
        issuer_of_patient_id=_text(identifier, "IssuerOfPatientID") or None,
        study_uids=_uids(identifier, "StudyInstanceUID") if depth >= 1 else None,
        series_uids=_uids(identifier, "SeriesInstanceUID") if depth >= 2 else None,
        sop_uids=_uids(identifier, "SOPInstanceUID") if depth >= 3 else None,
    )
    required = {
        "PATIENT": keys.patient_id,
        "STUDY": keys.study_uids,
        "SERIES": keys.series_uids,
        "IMAGE": keys.sop_uids,
    }[level]
    if not required:
        raise InvalidRequest(f"a {level} level retrieve needs {_REQUIRED_KEY[level]}")
    return keys


def patient_search_identifier(identifier: Dataset) -> Dataset:
    """The keys of a PATIENT level C-FIND that a study level search can match.

    The archive answers PATIENT level queries from its studies (a patient it holds has at
    least one), so the patient keys (group 0010, PS3.4 C.6.1.1.2) become study level keys.
    Keys of other levels with a value cannot be honoured at the patient level and are refused;
    empty ones are answered empty.
    """
    keys = Dataset()
    for elem in identifier:
        tag = int(elem.tag)
        group, element = tag >> 16, tag & 0xFFFF
        if tag in (_SPECIFIC_CHARACTER_SET, _QUERY_RETRIEVE_LEVEL) or element == 0:
            continue
        hex_tag = f"{tag:08X}"
        if hex_tag in PATIENT_COUNT_TAGS:
            if not _is_empty(elem):
                raise InvalidRequest(f"{elem.keyword} is computed by the archive; send it empty")
            continue
        if group == 0x0010:
            keys.add(elem)
        elif not _is_empty(elem):
            raise InvalidRequest(
                f"{elem.keyword or hex_tag} is not a patient level key (PS3.4 C.6.1.1.2)"
            )
    return keys


def find_response(
    request: Dataset, match: Mapping[str, Any], level: str, retrieve_ae_title: str
) -> Dataset:
    """A C-FIND response identifier (PS3.4 C.4.1.1.3.2) from a DICOM JSON match.

    It holds the keys of the request, with the match's values or empty when the archive has
    none, IssuerOfPatientID with a PatientID, the unique key of the level, the Query/Retrieve
    Level, the Retrieve AE Title, and Specific Character Set when a value is not plain ASCII
    (the catalogue holds UTF-8).
    """
    out = Dataset()
    for elem in request:
        tag = int(elem.tag)
        group, element = tag >> 16, tag & 0xFFFF
        if element == 0 or group in (0x0000, 0x0002):
            continue
        if tag in (_SPECIFIC_CHARACTER_SET, _QUERY_RETRIEVE_LEVEL, _RETRIEVE_AE_TITLE):
            continue
        found = _from_json(f"{tag:08X}", match)
        if found is not None:
            out.add(found)
        else:
            out.add_new(tag, elem.VR, None)
    # A PatientID is only an identity with its issuer (PS3.3 C.7.1.1.1.1: the Issuer of
    # Patient ID qualifies it), and hospitals reuse each other's IDs: every response that names
    # a patient says whose ID it is, asked for or not (an SCU passes over what it did not ask).
    if _PATIENT_ID in out and _ISSUER_OF_PATIENT_ID not in out:
        issuer = _from_json(f"{_ISSUER_OF_PATIENT_ID:08X}", match)
        if issuer is not None:
            out.add(issuer)
    unique = UNIQUE_KEYS[level]
    if int(unique, 16) not in out:
        found = _from_json(unique, match)
        if found is not None:
            out.add(found)
    out.QueryRetrieveLevel = level
    out.RetrieveAETitle = retrieve_ae_title
    # PS3.4 C.4.1.1.3.2: a response may carry Instance Availability though the request may not
    # ask for it; the least available instance of the match decides.
    availability = _from_json(_INSTANCE_AVAILABILITY, match)
    if availability is not None and level != "PATIENT":
        out.add(availability)
    if _needs_unicode(out):
        out.SpecificCharacterSet = "ISO_IR 192"  # PS3.3 C.12.1.1.2: UTF-8
    return out


def _from_json(hex_tag: str, match: Mapping[str, Any]) -> Any:
    value = match.get(hex_tag)
    if not value or ("Value" not in value and "InlineBinary" not in value):
        return None
    try:
        return Dataset.from_json({hex_tag: value})[int(hex_tag, 16)]
    except Exception as exc:
        # A stored value the archive cannot re-encode is answered empty, not as a failure of
        # the whole C-FIND; the log says which attribute.
        log.warning("C-FIND: attribute %s answered empty: %s", hex_tag, exc)
        return None


def _needs_unicode(ds: Dataset) -> bool:
    for elem in ds.iterall():
        if elem.VR not in _TEXT_VRS or elem.value is None:
            continue
        values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        if any(not str(v).isascii() for v in values):
            return True
    return False


def _is_empty(elem: Any) -> bool:
    value = elem.value
    if value is None or value == "" or value == b"":
        return True
    if elem.VR == "SQ":
        return True  # a sequence key asks for the attribute; it is not matched
    return isinstance(value, MultiValue | list) and not any(str(v).strip() for v in value)


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception as exc:  # pydicom decodes lazily and may fail on malformed values
        raise InvalidRequest(f"cannot read {keyword} of the identifier: {exc}") from exc
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value).strip(" \x00")
    return str(value).strip(" \x00")


def _uids(ds: Dataset, keyword: str) -> tuple[str, ...] | None:
    text = _text(ds, keyword)
    if not text:
        return None
    uids = tuple(dict.fromkeys(u.strip(" \x00") for u in text.split("\\")))
    for uid in uids:
        if not is_valid_uid(uid):
            raise InvalidRequest(f"{keyword} {uid[:80]!r} is not a valid UID")
    return uids
