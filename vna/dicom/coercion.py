"""Coercion rules of a source profile (``[[sources.coerce]]``): what they are and which
attributes they may touch.  ``vna.dicom.normalise`` applies them at ingest; the configuration
reader declares them with this type and checks each with :func:`rule_problem`.

pydicom's data dictionary is imported inside the functions: reading the configuration (every
command starts with it) should not pay for loading pydicom unless a rule is declared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: What a coercion rule does to its attribute (``[[sources.coerce]] action = ...``).
COERCE_ACTIONS = ("set", "remove", "prefix", "map")

# Attributes a coercion rule may not touch: the instance's identity, its encoding and its
# modification history (PS3.3 C.12.1: SOP Common; C.12.1.1.9: Original Attributes Sequence).
_UNCOERCIBLE = {
    0x00080005,  # SpecificCharacterSet: set by the UTF-8 conversion
    0x00080016,  # SOPClassUID
    0x00080018,  # SOPInstanceUID
    0x0020000D,  # StudyInstanceUID
    0x0020000E,  # SeriesInstanceUID
    0x04000561,  # OriginalAttributesSequence
}
_COERCIBLE_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM"}
_COERCIBLE_VRS |= {"UC", "UI", "UR", "UT"}


@dataclass(frozen=True)
class CoercionRule:
    """One rule of a source profile, applied at ingest by ``vna.dicom.normalise``.

    ``set`` gives the attribute ``value`` (adding it when absent); ``remove`` deletes it;
    ``prefix`` puts ``value`` in front of a present, non-empty value that does not already
    start with it (so a resend or a second pass changes nothing); ``map`` replaces a value
    found in ``map`` (``{"OLD" = "NEW"}``) and leaves others as they are.
    """

    action: str
    #: A DICOM keyword (``AccessionNumber``) or tag (``00080050``) of a top-level attribute.
    attribute: str
    value: str = ""
    map: tuple[tuple[str, str], ...] = ()


def coercion_tag(attribute: str) -> int | None:
    """The tag a rule's ``attribute`` names (keyword or 8 hex digits); None if unknown."""
    from pydicom.datadict import dictionary_has_tag, tag_for_keyword

    if re.fullmatch(r"[0-9A-Fa-f]{8}", attribute):
        tag = int(attribute, 16)
        return tag if dictionary_has_tag(tag) else None
    return tag_for_keyword(attribute)


def rule_problem(rule: CoercionRule, where: str) -> str | None:
    """What is wrong with ``rule``, as one line naming the key ``where`` (its place in the
    configuration, ``sources[0].coerce[1]``); None for a rule normalise can apply."""
    from pydicom.datadict import dictionary_VR

    if rule.action not in COERCE_ACTIONS:
        return f"'{where}.action' must be one of {', '.join(COERCE_ACTIONS)}, got {rule.action!r}"
    tag = coercion_tag(rule.attribute)
    if tag is None:
        return f"'{where}.attribute': {rule.attribute!r} is not a DICOM attribute"
    if tag >> 16 == 0x0002 or tag in _UNCOERCIBLE:
        return f"'{where}.attribute': {rule.attribute} may not be coerced"
    if rule.action != "remove" and dictionary_VR(tag) not in _COERCIBLE_VRS:
        return f"'{where}.attribute': {rule.attribute} ({dictionary_VR(tag)}) is not a text value"
    if rule.action == "prefix" and not rule.value:
        return f"'{where}.value' is required for prefix"
    if rule.action == "map" and not rule.map:
        return f'\'{where}.map\' is required for map (map = {{"OLD" = "NEW"}})'
    if "\\" in rule.value and rule.action == "prefix":
        return f"'{where}.value': a prefix cannot hold a backslash"
    return None
