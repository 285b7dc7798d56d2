"""Which study attributes an administrator may correct, and whether a corrected value is one
DICOM can carry: pure, no I/O.

A study correction changes the attributes of the General Study module (PS3.3 C.7.2.1) that
the catalogue indexes for QIDO-RS and C-FIND.  Each value must fit its VR (PS3.5 6.2): a
correction written into every stored object must not make the objects invalid.  An empty value
is allowed: these attributes are Type 2 (present, possibly empty) in the General Study module.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

from vna.errors import InvalidRequest

#: Attributes a study correction may set: keyword -> (VR, studies column).
STUDY_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "AccessionNumber": ("SH", "accession_number"),
    "StudyDescription": ("LO", "study_description"),
    "StudyDate": ("DA", "study_date"),
    "StudyTime": ("TM", "study_time"),
    "ReferringPhysicianName": ("PN", "referring_physician"),
    "StudyID": ("SH", "study_id"),
}

# PS3.5 Table 6.2-1: maximum lengths (PN: per component group).
_MAX_LENGTH = {"SH": 16, "LO": 64, "PN": 64}
_DA = re.compile(r"[0-9]{8}")
_TM = re.compile(r"(?:[01][0-9]|2[0-3])(?:[0-5][0-9](?:(?:[0-5][0-9]|60)(?:\.[0-9]{1,6})?)?)?")


def check_study_values(values: Mapping[str, str]) -> dict[str, str]:
    """The corrections, checked and trimmed; InvalidRequest names the first bad one."""
    if not values:
        raise InvalidRequest("nothing to update")
    unknown = sorted(set(values) - set(STUDY_ATTRIBUTES))
    if unknown:
        raise InvalidRequest(
            f"cannot update {', '.join(unknown)} at study level;"
            f" updatable: {', '.join(STUDY_ATTRIBUTES)}"
        )
    out: dict[str, str] = {}
    for keyword, raw in values.items():
        if not isinstance(raw, str):
            raise InvalidRequest(f"{keyword} must be text")
        value = raw.strip(" ")
        out[keyword] = value
        if not value:
            continue
        vr = STUDY_ATTRIBUTES[keyword][0]
        # A backslash separates values (PS3.5 6.4); control characters other than ESC are
        # not allowed in these VRs.
        if "\\" in value or any(ord(c) < 32 and c != "\x1b" for c in value):
            raise InvalidRequest(f"{keyword}: one value without backslash or control characters")
        if vr == "DA":
            if not _DA.fullmatch(value) or not _is_date(value):
                raise InvalidRequest(f"{keyword}: {value!r} is not a date (YYYYMMDD)")
        elif vr == "TM":
            if not _TM.fullmatch(value):
                raise InvalidRequest(f"{keyword}: {value!r} is not a time (HHMMSS[.FFFFFF])")
        elif vr == "PN":
            groups = value.split("=")
            if len(groups) > 3 or any(len(g) > _MAX_LENGTH["PN"] for g in groups):
                raise InvalidRequest(
                    f"{keyword}: at most three component groups of 64 characters (PN)"
                )
            if any(g.count("^") > 4 for g in groups):
                raise InvalidRequest(f"{keyword}: at most five components (FAMILY^GIVEN^...)")
        elif len(value) > _MAX_LENGTH[vr]:
            raise InvalidRequest(f"{keyword}: at most {_MAX_LENGTH[vr]} characters ({vr})")
    return out


def study_date(value: str) -> dt.date | None:
    """The catalogue's study_date for a checked StudyDate value."""
    if not value:
        return None
    return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def _is_date(value: str) -> bool:
    try:
        return study_date(value) is not None and int(value[:4]) >= 1
    except ValueError:
        return False
