"""Normalise an arriving instance's header per its source profile (pure: no I/O).

The steps, in order:

1. trim padding: leading and trailing spaces of SH, LO, CS and AE values and trailing spaces
   of PN values are not significant (PS3.5 6.2); a value carrying more of them than the one
   byte of even-length padding is trimmed, so ``"12345   "`` and ``"12345"`` are one
   PatientID;
2. assign Issuer of Patient ID (0010,0021) and, where configured, Issuer of Patient ID
   Qualifiers Sequence (0010,0024) (PS3.3 C.7.1.1): patient identity in the archive is
   (PatientID, issuer), so the same PatientID from two hospitals stays two patients;
3. the source's coercion rules (set, remove, prefix, map);
4. convert text to UTF-8: Specific Character Set (0008,0005) becomes ``ISO_IR 192`` when a text
   value (PS3.5 6.1.2.3: SH, LO, UC, ST, LT, UT, PN) holds characters outside the default
   repertoire in any other character set pydicom decodes, including the ISO 2022 code
   extensions (PS3.5 6.1.2.5) of the Japanese, Korean and Chinese sets.

Every changed top-level attribute is recorded once, with its value as received, in a new item
of Original Attributes Sequence (0400,0561) (PS3.3 C.12.1.1.9, Table C.12-1): Modified
Attributes Sequence (0400,0550) holds the previous values (an attribute that was absent is
included with no value; a change inside a sequence records the whole top-level sequence), with
Attribute Modification DateTime, Modifying System, Source of Previous Values and Reason for the
Attribute Modification (COERCE at ingest, CORRECT for an administrator's correction).  When the
character set changed, the item also holds the previous Specific Character Set so its values
keep their original encoding (PS3.5 7.5.3: an item may declare its own character set).

A header that needs nothing is left untouched, so the archive stores the received bytes
bit-exact (the common case).  The functions change the data set they are given in place: it is
the header the pipeline just parsed, and copying it would cost for nothing.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.charset import convert_encodings, default_encoding, python_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from vna.dicom.coercion import CoercionRule, coercion_tag

UTF8 = "ISO_IR 192"
#: Reason for the Attribute Modification (0400,0565) defined terms (PS3.3 C.12.1.1.9.2).
COERCE = "COERCE"
CORRECT = "CORRECT"

SPECIFIC_CHARACTER_SET = 0x00080005
ISSUER_OF_PATIENT_ID = 0x00100021
ISSUER_QUALIFIERS = 0x00100024
ORIGINAL_ATTRIBUTES = 0x04000561
_PIXEL_GROUP = 0x7FE0

#: PS3.5 6.1.2.3: the VRs whose values Specific Character Set applies to.
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
#: PS3.5 Table 6.2-1: leading and trailing spaces are not significant.
_TRIM_BOTH = frozenset({"AE", "CS", "LO", "SH"})
#: PS3.5 Table 6.2-1: trailing spaces are not significant.
_TRIM_TRAILING = frozenset({"PN"})
#: VRs whose value may hold several values separated by a backslash (PS3.5 6.4).
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})


class SourceProfile(Protocol):
    """What normalisation needs to know of the source an instance came from.

    The configuration's ``SourceSettings`` is one; the DICOM layer names only these
    attributes so that it does not depend on how settings are read.
    """

    @property
    def name(self) -> str: ...
    @property
    def issuer_of_patient_id(self) -> str: ...
    @property
    def trust_issuer(self) -> bool: ...
    @property
    def issuer_universal_entity_id(self) -> str: ...
    @property
    def issuer_universal_entity_id_type(self) -> str: ...
    @property
    def identifier_type_code(self) -> str: ...
    @property
    def convert_to_utf8(self) -> bool: ...
    @property
    def trim_padding(self) -> bool: ...
    @property
    def coerce(self) -> Seq[CoercionRule]: ...


@dataclass(frozen=True)
class Change:
    """One attribute the archive changed, for the warning it answers with and the audit."""

    attribute: str
    #: padding, issuer, set, remove, prefix, map, charset or correct
    kind: str
    before: str | None
    after: str | None

    def describe(self) -> str:
        if self.kind == "charset":
            return f"{self.attribute} converted to UTF-8"
        if self.after is None:
            return f"{self.attribute} removed ({self.kind})"
        return f"{self.attribute} {self.kind}: {self.before!r} -> {self.after!r}"


@dataclass(frozen=True)
class Normalised:
    dataset: Dataset
    changes: tuple[Change, ...]
    #: Why something was left as it was (logged, not a coercion).
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def warnings(self) -> tuple[str, ...]:
        """One line for the sender (STOW-RS Warning, C-STORE ErrorComment) when coerced."""
        if not self.changes:
            return ()
        names = sorted({c.attribute for c in self.changes})
        return ("coerced (PS3.3 C.12.1.1.9, originals kept): " + ", ".join(names),)


def normalise(
    ds: Dataset, source: SourceProfile, *, now: dt.datetime, modifying_system: str
) -> Normalised:
    """Apply ``source``'s profile to the header ``ds`` (in place); see the module docstring."""
    rec = _Recorder(ds)
    if source.trim_padding:
        _trim_padding(ds, rec)
    _assign_issuer(ds, source, rec)
    for rule in source.coerce:
        _apply_rule(ds, rule, rec)
    notes: list[str] = []
    note = _to_utf8(ds, rec, wanted=source.convert_to_utf8)
    if note:
        notes.append(note)
    rec.record(COERCE, now=now, system=modifying_system, previous_source=source.name)
    return Normalised(ds, tuple(rec.changes), tuple(notes))


def correct(
    ds: Dataset,
    values: Mapping[str, str | None],
    *,
    now: dt.datetime,
    modifying_system: str,
    previous_source: str = "",
) -> Normalised:
    """Set (or, for None, remove) attributes by keyword, as an administrator's correction
    (Reason CORRECT), recording the previous values like ``normalise`` does."""
    rec = _Recorder(ds)
    for keyword, value in values.items():
        tag = coercion_tag(keyword)
        if tag is None:
            raise ValueError(f"{keyword!r} is not a DICOM attribute keyword")
        current = _text(_peek(ds, tag))
        if value is None:
            if tag in ds:
                rec.remove(tag, "correct", current)
        elif current != value or tag not in ds:
            rec.set(tag, value, "correct", current)
    if any(_non_ascii(v) for v in values.values() if v):
        _to_utf8(ds, rec, wanted=True)
    rec.record(CORRECT, now=now, system=modifying_system, previous_source=previous_source)
    return Normalised(ds, tuple(rec.changes))


# --- steps -------------------------------------------------------------------------------------


def _trim_padding(ds: Dataset, rec: _Recorder) -> None:
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = _vr(raw)
        if vr not in _TRIM_BOTH and vr not in _TRIM_TRAILING:
            continue
        if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
            b = raw.value
            # The common case, decided on the bytes: no leading space, at most one byte of
            # trailing padding, no space around a value delimiter.
            if (
                not b.startswith(b" ")
                and len(b) - len(b.rstrip(b" \x00")) <= 1
                and b" \\" not in b
                and b"\\ " not in b
            ):
                continue
        elem = _peek(ds, tag)
        if elem is None or elem.value is None or elem.value == "":
            continue
        values = _values(elem)
        if vr in _TRIM_BOTH:
            trimmed = [v.strip(" \x00") for v in values]
        else:
            trimmed = [v.rstrip(" \x00") for v in values]
        # pydicom removes one byte of padding, or all trailing spaces of PN: the raw bytes
        # tell whether there was more than the one byte an odd-length value needs.
        extra = False
        if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
            extra = len(raw.value) - len(raw.value.rstrip(b" \x00")) > 1
        if trimmed == values and not extra:
            continue
        rec.set(tag, trimmed if len(trimmed) > 1 else trimmed[0], "padding", _text(elem))


def _assign_issuer(ds: Dataset, source: SourceProfile, rec: _Recorder) -> None:
    if not source.issuer_of_patient_id:
        return
    carried = _text(_peek(ds, ISSUER_OF_PATIENT_ID)).strip()
    if source.trust_issuer and carried:
        return
    if carried != source.issuer_of_patient_id or ISSUER_OF_PATIENT_ID not in ds:
        rec.set(ISSUER_OF_PATIENT_ID, source.issuer_of_patient_id, "issuer", carried or None)
    wanted = _qualifiers(source)
    if wanted is None:
        return
    current = _peek(ds, ISSUER_QUALIFIERS)
    if current is not None and current.value and _same_item(current.value[0], wanted):
        return
    rec.set(ISSUER_QUALIFIERS, Sequence([wanted]), "issuer", None)


def _qualifiers(source: SourceProfile) -> Dataset | None:
    """Issuer of Patient ID Qualifiers Sequence item (PS3.3 C.7.1.1, Table 10-18)."""
    if not (source.issuer_universal_entity_id or source.identifier_type_code):
        return None
    item = Dataset()
    if source.issuer_universal_entity_id:
        item.UniversalEntityID = source.issuer_universal_entity_id
        item.UniversalEntityIDType = source.issuer_universal_entity_id_type or "ISO"
    if source.identifier_type_code:
        item.IdentifierTypeCode = source.identifier_type_code
    return item


def _same_item(have: Dataset, want: Dataset) -> bool:
    return all(_text(_peek(have, elem.tag)).strip() == _text(elem) for elem in want) and len(
        have
    ) == len(want)


def _apply_rule(ds: Dataset, rule: CoercionRule, rec: _Recorder) -> None:
    tag = coercion_tag(rule.attribute)
    if tag is None:  # validated with the configuration; a programming error otherwise
        raise ValueError(f"coercion of unknown attribute {rule.attribute!r}")
    present = tag in ds
    current = _text(_peek(ds, tag))
    if rule.action == "set":
        if not present or current != rule.value:
            rec.set(tag, rule.value, "set", current if present else None)
    elif rule.action == "remove":
        if present:
            rec.remove(tag, "remove", current)
    elif rule.action == "prefix":
        if current and not current.startswith(rule.value):
            rec.set(tag, rule.value + current, "prefix", current)
    elif rule.action == "map":
        mapping = dict(rule.map)
        key = current.strip()
        if present and key in mapping and mapping[key] != current:
            rec.set(tag, mapping[key], "map", current)
    else:
        raise ValueError(f"unknown coercion action {rule.action!r}")


def _to_utf8(ds: Dataset, rec: _Recorder, *, wanted: bool) -> str | None:
    """Convert every text value to UTF-8 when one needs it; a note when it cannot be done."""
    terms = _charset_terms(_peek(ds, SPECIFIC_CHARACTER_SET))
    # A value the archive itself set (a coercion, a correction) may need UTF-8 even when the
    # profile does not ask for conversion.
    forced = any(_non_ascii(_text(e)) for t, e in rec.new_values() if t in ds)
    if not wanted and not forced:
        return None
    if not forced and terms in ([], ["ISO_IR 6"], [UTF8]) and not _nested_charsets(ds):
        # Text in the default repertoire (ASCII: PS3.5 6.1.2.2) or in UTF-8 already, and no
        # item declares another character set: nothing to convert, decided without decoding.
        return None
    unknown = _unknown_terms(terms)
    if unknown:
        return f"text left in its character set: pydicom does not know {', '.join(unknown)}"
    top_utf8 = terms == [UTF8]
    to_convert: list[BaseTag] = []
    for tag in list(ds.keys()):
        if tag == SPECIFIC_CHARACTER_SET or tag >> 16 == _PIXEL_GROUP:
            continue
        verdict = _needs_utf8(ds, tag, terms, top_utf8)
        if verdict == "lossy":
            return "text left in its character set: a value does not decode in it"
        if verdict == "yes":
            to_convert.append(tag)
    if not to_convert:
        return None
    for tag in to_convert:
        before = _peek(ds, tag)
        rec.before_change(tag)
        rec.changes.append(Change(_name(tag), "charset", _text(before), None))
    if not top_utf8:
        rec.before_change(Tag(SPECIFIC_CHARACTER_SET))
    # Decode every raw value with the character set it was written in, then drop the nested
    # declarations so every item inherits UTF-8 from the top level (PS3.5 7.5.3).
    ds.decode()
    for tag in to_convert:
        elem = ds[tag]
        if elem.VR == "SQ":
            _drop_nested_charsets(elem.value)
    ds[SPECIFIC_CHARACTER_SET] = DataElement(SPECIFIC_CHARACTER_SET, "CS", UTF8)
    return None


def _needs_utf8(parent: Dataset, tag: BaseTag, terms: list[str], utf8: bool) -> str:
    """'yes' if the element holds text that changes under UTF-8, 'lossy' if it does not
    decode, 'no' otherwise."""
    raw = parent.get_item(tag)
    if isinstance(raw, RawDataElement):
        # Most values are ASCII (no ISO 2022 escape either): nothing to decode, for text and
        # for sequences alike (a nested character set over ASCII text changes nothing).
        if isinstance(raw.value, bytes) and _plain_ascii(raw.value):
            return "no"
        if _vr(raw) not in TEXT_VRS and _vr(raw) != "SQ":
            return "no"
    elem = _peek(parent, tag, terms)
    if elem is None:
        return "no"
    if elem.VR in TEXT_VRS:
        text = _text(elem)
        if "\ufffd" in text:
            return "lossy"
        return "yes" if not utf8 and _non_ascii(text) else "no"
    if elem.VR == "SQ" and elem.value:
        verdict = "no"
        for item in elem.value:
            own = _charset_terms(_peek(item, SPECIFIC_CHARACTER_SET, terms))
            item_terms = own or terms
            if own and _unknown_terms(own):
                return "lossy"
            item_utf8 = item_terms == [UTF8]
            for sub in list(item.keys()):
                if sub == SPECIFIC_CHARACTER_SET:
                    continue
                v = _needs_utf8(item, sub, item_terms, item_utf8)
                if v == "lossy":
                    return v
                if v == "yes":
                    verdict = "yes"
        return verdict
    return "no"


def _drop_nested_charsets(items: Iterable[Dataset]) -> None:
    for item in items:
        if SPECIFIC_CHARACTER_SET in item:
            del item[SPECIFIC_CHARACTER_SET]
        for elem in item:
            if elem.VR == "SQ" and elem.value:
                _drop_nested_charsets(elem.value)


# --- recording ---------------------------------------------------------------------------------


@dataclass
class _Recorder:
    """Keeps the received value of each changed top-level attribute (first change wins)."""

    ds: Dataset
    originals: dict[BaseTag, DataElement | None] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    _new: dict[BaseTag, DataElement] = field(default_factory=dict)

    def before_change(self, tag: BaseTag) -> None:
        if tag not in self.originals:
            elem = _peek(self.ds, tag)
            self.originals[tag] = copy.deepcopy(elem) if elem is not None else None

    def set(self, tag: int, value: Any, kind: str, before: str | None) -> None:
        t = Tag(tag)
        self.before_change(t)
        vr = _dictionary_vr(t, self.ds)
        if isinstance(value, str) and "\\" in value and vr not in _SINGLE_VALUED:
            value = value.split("\\")
        elem = DataElement(t, vr, value)
        self.ds[t] = elem
        self._new[t] = elem
        after = value if isinstance(value, str) else _text(elem)
        self.changes.append(Change(_name(t), kind, before, after))

    def remove(self, tag: int, kind: str, before: str | None) -> None:
        t = Tag(tag)
        self.before_change(t)
        del self.ds[t]
        self.changes.append(Change(_name(t), kind, before, None))

    def new_values(self) -> list[tuple[BaseTag, DataElement]]:
        return list(self._new.items())

    def record(self, reason: str, *, now: dt.datetime, system: str, previous_source: str) -> None:
        """Append the Original Attributes Sequence item (PS3.3 C.12.1.1.9)."""
        if not self.originals:
            return
        modified = Dataset()
        for tag, elem in sorted(self.originals.items()):
            if elem is None:
                # Absent before: included with no value.
                vr = _dictionary_vr(tag, self.ds)
                modified[tag] = DataElement(tag, vr, Sequence() if vr == "SQ" else None)
            else:
                modified[tag] = elem
        item = Dataset()
        # LO values: 64 characters at most (PS3.5 6.2).
        item.SourceOfPreviousValues = previous_source[:64]
        item.AttributeModificationDateTime = _dt(now)
        item.ModifyingSystem = system[:64]
        item.ReasonForTheAttributeModification = reason
        item.ModifiedAttributesSequence = Sequence([modified])
        existing = _peek(self.ds, ORIGINAL_ATTRIBUTES)
        if existing is not None and existing.value:
            self.ds[ORIGINAL_ATTRIBUTES] = existing  # keep the earlier history, in order
            self.ds[ORIGINAL_ATTRIBUTES].value.append(item)
        else:
            self.ds.OriginalAttributesSequence = Sequence([item])


# --- reading values without disturbing the raw elements ----------------------------------------


def _peek(ds: Dataset, tag: int, terms: list[str] | None = None) -> DataElement | None:
    """The element decoded, without replacing the raw element in ``ds`` (an element the
    archive does not change is then written back byte for byte)."""
    t = Tag(tag)
    if t not in ds:
        return None
    raw = ds.get_item(t)
    if isinstance(raw, RawDataElement):
        encoding: Any = ds.original_character_set
        if terms is not None:
            encoding = convert_encodings(terms) if terms else [default_encoding]
        return convert_raw_data_element(raw, encoding=encoding, ds=ds)
    return raw


def _vr(elem: DataElement | RawDataElement) -> str | None:
    if elem.VR:
        return str(elem.VR)
    try:  # implicit VR: the dictionary's (private tags have none)
        return str(dictionary_VR(elem.tag))
    except KeyError:
        return None


def _dictionary_vr(tag: BaseTag, ds: Dataset) -> str:
    if tag in ds:
        vr = _vr(ds.get_item(tag))
        if vr and len(vr) == 2:
            return vr
    return str(dictionary_VR(tag))


def _values(elem: DataElement) -> list[str]:
    v = elem.value
    if v is None:
        return []
    if isinstance(v, MultiValue | list | tuple):
        return [str(x) for x in v]
    if isinstance(v, bytes):
        return [v.decode("latin-1")]
    return [str(v)]


def _text(elem: DataElement | None) -> str:
    if elem is None or elem.VR == "SQ":
        return ""
    return "\\".join(_values(elem))


def _charset_terms(elem: DataElement | None) -> list[str]:
    if elem is None:
        return []
    terms = [t.strip() for t in _values(elem)]
    return terms if any(terms) else []


def _unknown_terms(terms: list[str]) -> list[str]:
    return [t for t in terms if t and t not in python_encoding]


def _nested_charsets(ds: Dataset) -> bool:
    """Whether a sequence item may declare its own Specific Character Set (PS3.5 7.5.3)."""
    for tag in ds.keys():
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            if isinstance(elem.value, bytes) and (
                _SCS_LITTLE in elem.value or _SCS_BIG in elem.value
            ):
                return True
        elif elem.VR == "SQ" and elem.value:
            return True  # already decoded: look at it the slow way
    return False


_SCS_LITTLE = b"\x08\x00\x05\x00"
_SCS_BIG = b"\x00\x08\x00\x05"


def _plain_ascii(value: bytes) -> bool:
    return value.isascii() and b"\x1b" not in value


def _non_ascii(text: str) -> bool:
    return not text.isascii()


def _name(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _dt(now: dt.datetime) -> str:
    """A DT value (PS3.5 6.2) with the UTC offset."""
    aware = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    return aware.strftime("%Y%m%d%H%M%S.%f%z")
