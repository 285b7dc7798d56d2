"""Search queries (QIDO-RS and C-FIND) as one protocol-free value: pure, no I/O.

QIDO-RS (PS3.18 8.3.4, 10.6) sends ``{attributeID}={value}`` pairs plus ``includefield``,
``fuzzymatching``, ``limit`` and ``offset``; C-FIND (PS3.4 C.4.1) sends an identifier data set.
Both become a :class:`Query` whose matches follow the C-FIND matching rules of PS3.4 C.2.2.2,
which PS3.18 8.3.4.1 adopts for QIDO-RS:

* universal matching (C.2.2.2.3): an empty value, or a lone ``*``: no constraint, but the
  attribute is returned;
* single value matching (C.2.2.2.1);
* list of UID matching (C.2.2.2.2): UIDs separated by ``\\`` (the C-FIND value delimiter) or by
  ``,`` (the QIDO-RS value list of PS3.18 8.3.4.1).  Code String attributes (``Modality``,
  ``ModalitiesInStudy``) take the same lists, matching any of the values (their values cannot
  contain either separator);
* wild card matching (C.2.2.2.4): ``*`` and ``?`` in text VRs (AE CS LO LT PN SH ST UC UR UT);
* range matching (C.2.2.2.5): ``lo-hi``, ``-hi``, ``lo-`` for DA, TM and DT.

Sequence matching (C.2.2.2.6) and dotted attribute paths (PS3.18 8.3.4.1) are refused with a
clear message; fuzzy matching of person names (PS3.18 8.3.4.2) is accepted as a request and not
performed (the query records that it was asked for, so the gateway can say so with a Warning).

One vendor extension: ``includelinked=true`` widens a single-value PatientID match (with
IssuerOfPatientID, or across issuers without it) to every patient identity an administrator
linked to it (``vna patients link``), so that one query finds a person's studies from every
hospital.  PS3.18 8.3.4 defines no such parameter; an origin server may not know it, so
clients send it only to this archive.

Every problem raises :class:`vna.errors.InvalidRequest` naming the parameter.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Literal

from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidRequest

Level = Literal["study", "series", "instance"]
LEVELS: tuple[Level, ...] = ("study", "series", "instance")
_RANK: dict[str, int] = {"study": 0, "series": 1, "instance": 2}
# C-FIND's Query/Retrieve Level values (PS3.4 C.6.1.1.1, C.6.2.1.1) mapped to ours.
_DIMSE_LEVELS: dict[str, Level] = {
    "STUDY": "study",
    "SERIES": "series",
    "IMAGE": "instance",
    "INSTANCE": "instance",
}


class MatchKind(Enum):
    """The kinds of matching of PS3.4 C.2.2.2."""

    UNIVERSAL = "universal"  # C.2.2.2.3
    SINGLE = "single"  # C.2.2.2.1
    LIST = "list"  # C.2.2.2.2
    WILDCARD = "wildcard"  # C.2.2.2.4
    RANGE = "range"  # C.2.2.2.5


@dataclass(frozen=True)
class Match:
    """One matching key.

    ``values`` holds the one value of SINGLE and WILDCARD matching (the wildcard pattern as
    sent, ``*`` and ``?`` unescaped) and the values of LIST matching.  RANGE matching has
    ``low`` and ``high`` ("" for an open end), in DICOM form with colons removed from times.
    """

    tag: str  # eight upper-case hex digits: the key of the attribute in DICOM JSON
    keyword: str  # "" for attributes the dictionary does not name
    vr: str
    kind: MatchKind
    values: tuple[str, ...] = ()
    low: str = ""
    high: str = ""

    @property
    def value(self) -> str:
        return self.values[0] if self.values else ""


@dataclass(frozen=True)
class Query:
    """A search at one level, the same whichever protocol asked."""

    level: Level
    #: Matching keys by tag (including universal ones: attributes to return).
    matches: Mapping[str, Match] = field(default_factory=lambda: MappingProxyType({}))
    #: Extra attributes to return (tags), from ``includefield``.
    include_fields: tuple[str, ...] = ()
    #: ``includefield=all``: every available attribute of the level.
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    #: ``fuzzymatching=true`` was asked for; matching is literal regardless (PS3.18 8.3.4.2).
    fuzzy_matching_requested: bool = False
    #: ``includelinked=true`` (vendor extension): the PatientID match also matches every
    #: identity linked to it.
    include_linked: bool = False
    #: Path constraints: /studies/{study}/... and .../series/{series}/...
    study_uid: str | None = None
    series_uid: str | None = None

    def match(self, tag: str) -> Match | None:
        return self.matches.get(tag)

    @property
    def returned_tags(self) -> tuple[str, ...]:
        """Attributes asked for beyond the defaults: include fields, then matching keys
        (PS3.18 10.6.3.3: attributes used as matching keys are returned)."""
        seen = dict.fromkeys(self.include_fields)
        seen.update(dict.fromkeys(self.matches))
        return tuple(seen)


# --- the information model -----------------------------------------------------------------
# Which level an attribute belongs to decides whether it may be a matching key at a level
# (PS3.18 10.6.1.2: study keys at every level, series keys at series and instance level).
# Group 0010 is the Patient IE (PS3.3 C.7.1); patients are searched through their studies.

#: Study IE attributes other than group 0010 (PS3.3 C.7.2.1 General Study, C.7.2.2 Patient
#: Study, and the study-level query attributes of PS3.4 C.6.1.1.3 and PS3.18 Table 10.6.3-3).
STUDY_TAGS = frozenset(
    {
        "00080020",  # StudyDate
        "00080030",  # StudyTime
        "00080050",  # AccessionNumber
        "00080051",  # IssuerOfAccessionNumberSequence
        "00080061",  # ModalitiesInStudy
        "00080062",  # SOPClassesInStudy
        "00080090",  # ReferringPhysicianName
        "00080096",  # ReferringPhysicianIdentificationSequence
        "0008009C",  # ConsultingPhysicianName
        "00081030",  # StudyDescription
        "00081032",  # ProcedureCodeSequence
        "00081048",  # PhysiciansOfRecord
        "00081060",  # NameOfPhysiciansReadingStudy
        "00081080",  # AdmittingDiagnosesDescription
        "0020000D",  # StudyInstanceUID
        "00200010",  # StudyID
        "00201206",  # NumberOfStudyRelatedSeries
        "00201208",  # NumberOfStudyRelatedInstances
        "00321033",  # RequestingService
        "00321060",  # RequestedProcedureDescription
        "00380010",  # AdmissionID
        "00401012",  # ReasonForPerformedProcedureCodeSequence
    }
)

#: Series IE attributes (PS3.3 C.7.3.1 General Series, C.7.5.1 General Equipment, C.7.4.1
#: Frame of Reference, PS3.18 Table 10.6.3-4).
SERIES_TAGS = frozenset(
    {
        "00080021",  # SeriesDate
        "00080031",  # SeriesTime
        "00080060",  # Modality
        "00080070",  # Manufacturer
        "00080080",  # InstitutionName
        "00080081",  # InstitutionAddress
        "0008103E",  # SeriesDescription
        "00081010",  # StationName
        "00081040",  # InstitutionalDepartmentName
        "00081050",  # PerformingPhysicianName
        "00081070",  # OperatorsName
        "00081090",  # ManufacturerModelName
        "00081111",  # ReferencedPerformedProcedureStepSequence
        "00180015",  # BodyPartExamined
        "00181000",  # DeviceSerialNumber
        "00181020",  # SoftwareVersions
        "00185100",  # PatientPosition
        "0020000E",  # SeriesInstanceUID
        "00200011",  # SeriesNumber
        "00200052",  # FrameOfReferenceUID
        "00200060",  # Laterality
        "00201040",  # PositionReferenceIndicator
        "00201209",  # NumberOfSeriesRelatedInstances
        "00400244",  # PerformedProcedureStepStartDate
        "00400245",  # PerformedProcedureStepStartTime
        "00400253",  # PerformedProcedureStepID
        "00400254",  # PerformedProcedureStepDescription
        "00400275",  # RequestAttributesSequence
    }
)

#: Attributes the archive computes for the response; they cannot be matching keys.
RETURN_ONLY_TAGS = frozenset(
    {
        "00080054",  # RetrieveAETitle
        "00080056",  # InstanceAvailability
        "00081190",  # RetrieveURL
        "00201200",  # NumberOfPatientRelatedStudies
        "00201202",  # NumberOfPatientRelatedSeries
        "00201204",  # NumberOfPatientRelatedInstances
        "00201206",  # NumberOfStudyRelatedSeries
        "00201208",  # NumberOfStudyRelatedInstances
        "00201209",  # NumberOfSeriesRelatedInstances
    }
)


def attribute_level(tag: str) -> Level:
    """The level an attribute belongs to; anything not known to be study or series level is
    treated as instance level (it lives in each instance's header)."""
    if tag.startswith("0010") or tag in STUDY_TAGS:
        return "study"
    if tag in SERIES_TAGS:
        return "series"
    return "instance"


# --- QIDO-RS -------------------------------------------------------------------------------

# PS3.18 8.3.3: content negotiation parameters may appear in any request; the gateway reads them.
_IGNORED_PARAMETERS = frozenset({"accept", "charset"})


def parse_qido(
    level: str,
    params: Iterable[tuple[str, str]],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Query:
    """The query of a QIDO-RS search request (PS3.18 10.6.1).

    ``params`` are the decoded query parameters in order; names may repeat.  ``study_uid`` and
    ``series_uid`` come from the target resource's path.
    """
    lvl = _level(level)
    study_uid, series_uid = _path_constraints(lvl, study_uid, series_uid)
    matches: dict[str, Match] = {}
    includes: dict[str, None] = {}
    include_all = False
    limit: int | None = None
    offset: int | None = None
    fuzzy: bool | None = None
    linked: bool | None = None
    for name, value in params:
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidRequest("query parameters must be text")
        reserved = name.lower()
        if reserved == "includefield":
            # PS3.18 8.3.4.3: repeated, or a comma-separated list; "all" for every attribute.
            for item in value.split(","):
                item = item.strip()
                if not item:
                    continue
                if item.lower() == "all":
                    include_all = True
                    continue
                where = f"query parameter 'includefield' value {_show(item)}"
                includes[_resolve(item, where).tag] = None
        elif reserved == "limit":
            if limit is not None:
                raise InvalidRequest("query parameter 'limit' given more than once")
            limit = _count(value, "limit")
            if limit == 0:
                raise InvalidRequest("query parameter 'limit' must be a positive integer")
        elif reserved == "offset":
            if offset is not None:
                raise InvalidRequest("query parameter 'offset' given more than once")
            offset = _count(value, "offset")
        elif reserved == "fuzzymatching":
            if fuzzy is not None:
                raise InvalidRequest("query parameter 'fuzzymatching' given more than once")
            fuzzy = _flag("fuzzymatching", value)
        elif reserved == "includelinked":
            if linked is not None:
                raise InvalidRequest("query parameter 'includelinked' given more than once")
            linked = _flag("includelinked", value)
        elif reserved in _IGNORED_PARAMETERS:
            continue
        else:
            where = f"query parameter {_show(name)}"
            attr = _resolve(name, where)
            _add(matches, _match(attr, value, lvl, where), where)
    if linked:
        _check_linked(matches)
    return Query(
        level=lvl,
        matches=MappingProxyType(matches),
        include_fields=tuple(includes),
        include_all=include_all,
        limit=limit,
        offset=offset or 0,
        fuzzy_matching_requested=bool(fuzzy),
        include_linked=bool(linked),
        study_uid=study_uid,
        series_uid=series_uid,
    )


PATIENT_ID = "00100020"
ISSUER_OF_PATIENT_ID = "00100021"


def _flag(name: str, value: str) -> bool:
    flag = value.strip().lower()
    if flag not in ("true", "false"):
        raise InvalidRequest(f"query parameter {name!r} must be true or false, not {_show(value)}")
    return flag == "true"


def _check_linked(matches: Mapping[str, Match]) -> None:
    """``includelinked`` follows the links of one identity: PatientID must be a single value
    (no wildcard, no list), and IssuerOfPatientID, when given, too."""
    patient = matches.get(PATIENT_ID)
    if patient is None or patient.kind is not MatchKind.SINGLE:
        raise InvalidRequest(
            "query parameter 'includelinked' needs one PatientID value (no wildcard) to follow"
            " the links of"
        )
    issuer = matches.get(ISSUER_OF_PATIENT_ID)
    if issuer is not None and issuer.kind not in (MatchKind.SINGLE, MatchKind.UNIVERSAL):
        raise InvalidRequest(
            "query parameter 'includelinked' needs one IssuerOfPatientID value (no wildcard)"
        )


# --- C-FIND --------------------------------------------------------------------------------

# Identifier elements that are not keys: the level itself and the character set of the
# identifier (PS3.4 C.4.1.1.3.1, C.6.1.1.1), both already applied by the protocol layer.
_NOT_KEYS = frozenset({0x00080052, 0x00080005})


def query_from_identifier(level: str, ds: Dataset) -> Query:
    """The query of a C-FIND identifier (PS3.4 C.4.1.1.3.1): every element is a key, an empty
    one asks for the attribute to be returned (universal matching, C.2.2.2.3).

    ``level`` is ours (study, series, instance) or the identifier's Query/Retrieve Level
    (STUDY, SERIES, IMAGE).  A sequence key is returned, not matched: sequence matching
    (C.2.2.2.6) is not supported, and PS3.4 lets an SCP treat an unsupported key as universal.
    """
    lvl = _level(level)
    matches: dict[str, Match] = {}
    try:
        elements = list(ds)
    except Exception as exc:  # pydicom raises many types on malformed identifiers
        raise InvalidRequest(f"cannot read the C-FIND identifier: {exc}") from exc
    for elem in elements:
        tag = int(elem.tag)
        group, element = tag >> 16, tag & 0xFFFF
        # Group lengths, command and file meta groups are encoding, not keys.
        if tag in _NOT_KEYS or element == 0 or group in (0x0000, 0x0002):
            continue
        hex_tag = f"{tag:08X}"
        keyword = keyword_for_tag(tag) or ""
        where = f"query key {keyword or hex_tag} ({group:04X},{element:04X})"
        vr = _first_vr(str(elem.VR or "")) or _dictionary_vr(tag) or "UN"
        attr = _Attribute(hex_tag, keyword, vr)
        if vr == "SQ":
            match = Match(hex_tag, keyword, vr, MatchKind.UNIVERSAL)
        else:
            match = _match(attr, _element_text(elem, where), lvl, where)
        _add(matches, match, where)
    return Query(level=lvl, matches=MappingProxyType(matches))


# --- keys and values -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Attribute:
    tag: str
    keyword: str
    vr: str | None  # None: not in the dictionary (private or unknown)


_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]{0,79}")
_LOWER_KEYWORDS: dict[str, str] | None = None


def _resolve(name: str, where: str) -> _Attribute:
    """A keyword or eight hex digits (PS3.18 8.3.4.1 ``dicomattribute``) as an attribute."""
    if "." in name:
        raise InvalidRequest(
            f"{where}: attribute paths into sequences are not supported (sequence matching,"
            " PS3.4 C.2.2.2.6)"
        )
    if _HEX_TAG.fullmatch(name):
        tag = int(name, 16)
        return _Attribute(f"{tag:08X}", keyword_for_tag(tag) or "", _dictionary_vr(tag))
    if _KEYWORD.fullmatch(name):
        tag_or_none = tag_for_keyword(name)
        if tag_or_none is not None:
            tag = int(tag_or_none)
            return _Attribute(f"{tag:08X}", name, _dictionary_vr(tag))
        hint = _suggest(name)
        raise InvalidRequest(
            f"{where}: unknown attribute keyword" + (f" (did you mean {hint}?)" if hint else "")
        )
    raise InvalidRequest(f"{where}: not a DICOM attribute keyword or tag (8 hex digits)")


def _suggest(name: str) -> str | None:
    global _LOWER_KEYWORDS
    if _LOWER_KEYWORDS is None:
        _LOWER_KEYWORDS = {k.lower(): k for k in keyword_dict if k}
    return _LOWER_KEYWORDS.get(name.lower())


def _dictionary_vr(tag: int) -> str | None:
    try:
        return _first_vr(dictionary_VR(tag))
    except KeyError:
        return None


def _first_vr(vr: str) -> str:
    # Ambiguous dictionary entries read "US or SS"; the first is the usual encoding.
    return vr.split(" or ")[0].strip()


_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
_DECIMAL_VRS = frozenset({"DS", "FL", "FD"})
_RANGE_VRS = frozenset({"DA", "TM", "DT"})
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")
# Postgres numeric takes these; exponents are bounded so a value cannot overflow it.
_DECIMAL = re.compile(
    r"[+-]?(?:[0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:[eE][+-]?[0-9]{1,3})?"
)
_LIST_SEPARATORS = re.compile(r"[,\\]")
_MAX_VALUE_LENGTH = 65536


def _match(attr: _Attribute, raw: str, level: Level, where: str) -> Match:
    # PS3.4 C.2.2.2.1: leading and trailing spaces are not significant (and UIDs are padded
    # with NUL in C-FIND identifiers).
    value = raw.strip(" \x00")
    _check_text(value, where)
    tag, keyword = attr.tag, attr.keyword
    if value in ("", "*"):
        return Match(tag, keyword, attr.vr or "UN", MatchKind.UNIVERSAL)
    vr = attr.vr
    if vr is None:
        raise InvalidRequest(
            f"{where}: attribute {tag} is not in the DICOM dictionary; it can be returned"
            " (includefield) but not matched"
        )
    if tag in RETURN_ONLY_TAGS:
        raise InvalidRequest(
            f"{where}: {keyword or tag} is computed by the archive and cannot be matched;"
            " ask for it with includefield"
        )
    attr_level = attribute_level(tag)
    if _RANK[attr_level] > _RANK[level]:
        raise InvalidRequest(
            f"{where}: {keyword or tag} is a {attr_level}-level attribute and cannot be"
            f" matched in a {level}-level search"
        )
    if vr == "UI":
        uids = _split_list(value, where)
        for uid in uids:
            if not is_valid_uid(uid):
                raise InvalidRequest(f"{where}: {_show(uid)} is not a valid UID")
        kind = MatchKind.SINGLE if len(uids) == 1 else MatchKind.LIST
        return Match(tag, keyword, vr, kind, uids)
    if vr in _RANGE_VRS:
        return _range_match(tag, keyword, vr, value, where)
    if vr in _INTEGER_VRS or vr in _DECIMAL_VRS:
        pattern = _INTEGER if vr in _INTEGER_VRS else _DECIMAL
        if not pattern.fullmatch(value):
            kind_name = "an integer" if vr in _INTEGER_VRS else "a decimal number"
            raise InvalidRequest(f"{where}: {_show(value)} is not {kind_name} ({vr})")
        return Match(tag, keyword, vr, MatchKind.SINGLE, (value,))
    if vr in _WILDCARD_VRS or vr == "AS":
        if vr == "CS" and _LIST_SEPARATORS.search(value):
            codes = _split_list(value, where)
            if len(codes) > 1:
                if any(("*" in c or "?" in c) for c in codes):
                    raise InvalidRequest(f"{where}: a list of values cannot hold wildcards")
                return Match(tag, keyword, vr, MatchKind.LIST, codes)
            value = codes[0]
        elif "\\" in value:
            raise InvalidRequest(
                f"{where}: several values (backslash) are only supported for UIDs and codes"
            )
        if "*" in value or "?" in value:
            if vr not in _WILDCARD_VRS:
                raise InvalidRequest(f"{where}: wildcards are not allowed for {vr} values")
            return Match(tag, keyword, vr, MatchKind.WILDCARD, (value,))
        return Match(tag, keyword, vr, MatchKind.SINGLE, (value,))
    raise InvalidRequest(f"{where}: matching on {vr} attributes is not supported")


def _split_list(value: str, where: str) -> tuple[str, ...]:
    items = [v.strip(" \x00") for v in _LIST_SEPARATORS.split(value)]
    if any(not v for v in items):
        raise InvalidRequest(f"{where}: empty value in a list")
    return tuple(dict.fromkeys(items))


# PS3.5 6.2: DA YYYYMMDD; TM HH[MM[SS[.F{1,6}]]]; DT YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX].
_DA = re.compile(r"(?P<y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})")
_TM = re.compile(r"(?:[01][0-9]|2[0-3])(?:[0-5][0-9](?:(?:[0-5][0-9]|60)(?:\.[0-9]{1,6})?)?)?")
_DT_TEXT = (
    r"[0-9]{4}(?:(?:0[1-9]|1[0-2])(?:(?:0[1-9]|[12][0-9]|3[01])(?:(?:[01][0-9]|2[0-3])"
    r"(?:[0-5][0-9](?:(?:[0-5][0-9]|60)(?:\.[0-9]{1,6})?)?)?)?)?)?(?:[+-][0-9]{4})?"
)
_DT = re.compile(_DT_TEXT)
_DT_RANGE = re.compile(f"(?P<low>{_DT_TEXT})?-(?P<high>{_DT_TEXT})?")
# ACR-NEMA times (PS3.5 6.2, retired) separate with colons: 10:15:00.
_OLD_TM = re.compile(r"[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?")


def _range_match(tag: str, keyword: str, vr: str, value: str, where: str) -> Match:
    if vr == "DT":
        if _DT.fullmatch(value):
            # A single DT, which may carry a negative UTC offset: checked before ranges.
            return Match(tag, keyword, vr, MatchKind.SINGLE, (value,))
        m = _DT_RANGE.fullmatch(value)
        if not m or not (m["low"] or m["high"]):
            raise InvalidRequest(f"{where}: {_show(value)} is not a DT value or range")
        low, high = m["low"] or "", m["high"] or ""
    else:
        parts = value.split("-")
        if len(parts) == 1:
            return Match(tag, keyword, vr, MatchKind.SINGLE, (_date_or_time(vr, value, where),))
        if len(parts) != 2 or not (parts[0] or parts[1]):
            raise InvalidRequest(
                f"{where}: {_show(value)} is not a {vr} value or range"
                f" ({'YYYYMMDD' if vr == 'DA' else 'HHMMSS'}, with '-' between the ends of a"
                " range)"
            )
        low = _date_or_time(vr, parts[0], where) if parts[0] else ""
        high = _date_or_time(vr, parts[1], where) if parts[1] else ""
    if low and high and range_key(vr, low, upper=False) > range_key(vr, high, upper=True):
        raise InvalidRequest(f"{where}: the range {_show(value)} ends before it starts")
    return Match(tag, keyword, vr, MatchKind.RANGE, low=low, high=high)


def _date_or_time(vr: str, value: str, where: str) -> str:
    value = value.strip()
    if vr == "DA":
        m = _DA.fullmatch(value)
        if m:
            try:
                if int(m["y"]) >= 1:
                    dt.date(int(m["y"]), int(m["m"]), int(m["d"]))
                    return value
            except ValueError:
                pass
        raise InvalidRequest(f"{where}: {_show(value)} is not a date (DA: YYYYMMDD)")
    if _OLD_TM.fullmatch(value):
        value = value.replace(":", "")
    if _TM.fullmatch(value):
        return value
    raise InvalidRequest(f"{where}: {_show(value)} is not a time (TM: HH[MM[SS[.FFFFFF]]])")


def range_key(vr: str, value: str, *, upper: bool) -> str:
    """A fixed-width digit string that orders DA, TM and DT values as text, for range matching.

    A value of reduced precision stands for the whole period it names (PS3.4 C.2.2.2.5: an
    upper bound of 10 is 10:59:59.999999), so the missing digits of an upper bound are 9s and
    of anything else 0s.  DT UTC offsets are ignored.
    """
    digits = value.strip()
    if vr == "DT":
        m = re.match(r"[0-9.]*", digits)
        digits = m.group(0) if m else ""
    digits = digits.replace(":", "").replace(".", "")
    width = {"DA": 8, "TM": 12, "DT": 20}[vr]
    return digits[:width].ljust(width, "9" if upper else "0")


def _count(value: str, name: str) -> int:
    text = value.strip()
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise InvalidRequest(
            f"query parameter {name!r} must be a non-negative integer (at most 18 digits),"
            f" not {_show(value)}"
        )
    return int(text)


def _check_text(value: str, where: str) -> None:
    # The catalogue stores text: no NUL, valid Unicode (lone surrogates cannot be encoded).
    if "\x00" in value:
        raise InvalidRequest(f"{where}: the value contains a NUL character")
    if len(value) > _MAX_VALUE_LENGTH:
        raise InvalidRequest(f"{where}: the value is too long")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{where}: the value is not valid text") from exc


def _element_text(elem: Any, where: str) -> str:
    try:
        value = elem.value
    except Exception as exc:  # pydicom converts values lazily and may fail on bad data
        raise InvalidRequest(f"{where}: cannot read the value: {exc}") from exc
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        if not value:
            return ""
        raise InvalidRequest(f"{where}: matching on binary values is not supported")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def _add(matches: dict[str, Match], match: Match, where: str) -> None:
    """Record a key; a repeated UID key widens the list (StudyInstanceUID=a&StudyInstanceUID=b)."""
    old = matches.get(match.tag)
    if old is None or old.kind is MatchKind.UNIVERSAL:
        matches[match.tag] = match
        return
    if match.kind is MatchKind.UNIVERSAL:
        return
    listable = (MatchKind.SINGLE, MatchKind.LIST)
    if match.vr in ("UI", "CS") and old.kind in listable and match.kind in listable:
        values = tuple(dict.fromkeys(old.values + match.values))
        kind = MatchKind.SINGLE if len(values) == 1 else MatchKind.LIST
        matches[match.tag] = Match(match.tag, match.keyword, match.vr, kind, values)
        return
    raise InvalidRequest(f"{where}: given more than once")


def _level(level: str) -> Level:
    if level in LEVELS:
        return level
    mapped = _DIMSE_LEVELS.get(str(level).strip().upper())
    if mapped is None:
        raise InvalidRequest(
            f"query level {_show(str(level))} is not supported (STUDY, SERIES or IMAGE)"
        )
    return mapped


def _path_constraints(
    level: Level, study_uid: str | None, series_uid: str | None
) -> tuple[str | None, str | None]:
    if series_uid is not None and (level != "instance" or study_uid is None):
        raise InvalidRequest("a series in the path is only valid for instance searches")
    if study_uid is not None and level == "study":
        raise InvalidRequest("a study in the path is not valid for study searches")
    for name, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)):
        if uid is not None and not is_valid_uid(uid):
            raise InvalidRequest(f"{name} in the path is not a valid UID: {_show(uid)}")
    return study_uid, series_uid


def _show(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:64] + "...")
