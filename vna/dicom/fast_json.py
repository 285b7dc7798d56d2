"""DICOM JSON (PS3.18 F.2) and header values read straight from pydicom's raw elements.

pydicom turns each ``RawDataElement`` into a ``DataElement`` on first access (VR hooks, value
classes such as UID, IS, DSfloat and PersonName, validation, keyword lookups) before
``DataElement.to_json_dict`` turns that into JSON: about a millisecond for an ordinary image
header, for values the archive only copies into the catalogue.  The functions here compute the
same results from the raw bytes for the value forms they know, and return None (or SLOW) for
anything else so that the caller asks pydicom, which then also raises whatever it raised before.

"The same" is what ``Dataset[tag]`` followed by ``to_json_dict(None, threshold)`` produces,
leaf for leaf, except that a UI value is a ``str`` where pydicom has its ``UID`` subclass (equal,
and serialised alike).  tests/unit/test_fast_json.py holds the proof against pydicom itself.

Elements read here stay raw, where pydicom's conversion would have replaced them in the data
set: the caller decides when that may be (parse.py reads raw only a data set as parsed).
"""

from __future__ import annotations

import base64
import codecs
import struct
from collections.abc import Callable, MutableSequence
from typing import Any

import pydicom.hooks
from pydicom import config
from pydicom.charset import default_encoding
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import _LUT_DESCRIPTOR_TAGS

_LUT_DESCRIPTORS = frozenset(int(t) for t in _LUT_DESCRIPTOR_TAGS)
#: The VRs whose value pydicom hands over as bytes (and the archive may leave out as bulk data).
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_ESC = b"\x1b"

Values = list[Any]
#: A converter: (value bytes, little endian, text codec) -> the JSON "Value" list ([] when the
#: element has no value), or None when pydicom must decide.
_Converter = Callable[[bytes, bool, str | None], Values | None]


def usable() -> bool:
    """Whether pydicom converts values as the fast path assumes (its default settings).

    Any hook, callback or option that changes value conversion sends everything through
    pydicom instead, so a deployment (or test) that sets one keeps pydicom's results.
    """
    return (
        config.data_element_callback is None
        and pydicom.hooks.hooks.raw_element_vr is pydicom.hooks.raw_element_vr
        and pydicom.hooks.hooks.raw_element_value is pydicom.hooks.raw_element_value
        and not pydicom.hooks.hooks.raw_element_kwargs
        and not config.use_none_as_empty_text_VR_value
        and not config.datetime_conversion
        and not config.use_DS_numpy
        and not config.use_IS_numpy
        and not config.use_DS_decimal
        and config.settings.reading_validation_mode != config.RAISE
        # PersonName encodes each decoded name again; only RAISE makes that fail.
        and config.settings.writing_validation_mode != config.RAISE
    )


class Reader:
    """Raw elements of one data set (or sequence item) as JSON and as header values."""

    __slots__ = ("_encodings", "_text_codec", "ds")

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self._encodings: str | MutableSequence[str] | None = None
        self._text_codec: str | _Slow | None = SLOW

    def element_json(self, raw: RawDataElement, bulk_threshold: int | None) -> Any:
        """The element's DICOM JSON; BULK when it is binary and longer than
        ``bulk_threshold``; None when pydicom must convert it."""
        vr = self._vr(raw)
        if vr is None:
            return None
        value: bytes = raw.value  # type: ignore[assignment]
        if not raw.length:
            return {"vr": vr}
        converter = _CONVERTERS.get(vr)
        if converter is None:  # binary
            if bulk_threshold is not None and len(value) > bulk_threshold:
                return BULK
            return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("utf-8")}
        codec = self._text_codec
        if codec is SLOW:
            codec = self._codec(vr)
        values = converter(value, raw.is_little_endian, codec)  # type: ignore[arg-type]
        if values is None:
            return None
        if not values:
            return {"vr": vr}
        return {"vr": vr, "Value": values}

    def text(self, raw: RawDataElement) -> str | None:
        """``str(value)`` of a single-valued text element (PN included) as pydicom gives it
        (empty: ""); None when pydicom must convert it."""
        vr = self._vr(raw)
        if vr not in _STRING_VRS:
            return None
        value: bytes = raw.value  # type: ignore[assignment]
        if not raw.length:
            return ""
        if vr == "PN":
            # str(PersonName) joins the components with trailing empty ones dropped.
            text = _decode_text(value.rstrip(b"\x00 "), self._codec(vr))
            if text is None or "\\" in text:
                return None
            return text.rstrip("=")
        if vr not in _SINGLE_STRING_VRS and b"\\" in value:
            return None  # several values
        codec = self._text_codec
        if codec is SLOW:
            codec = self._codec(vr)
        values = _CONVERTERS[vr](value, raw.is_little_endian, codec)  # type: ignore[arg-type]
        if values is None:
            return None
        return values[0] if values else ""

    def integer(self, raw: RawDataElement) -> int | _Slow | None:
        """``int(value)`` of a single-valued integer element, None when it has no value (what
        the header takes either as); SLOW when pydicom must convert it."""
        vr = self._vr(raw)
        if vr not in _INTEGER_VRS:
            return SLOW
        value: bytes = raw.value  # type: ignore[assignment]
        if not raw.length:
            return None
        if vr == "IS":
            if b"\\" in value:
                return SLOW
            if value.decode("latin-1").rstrip(" \x00").strip() == "":
                return None  # pydicom's IS keeps a blank value as the string: no number
        elif len(value) != _NUMBER_SIZE[vr]:
            return SLOW  # several values come as a list, which the header does not read
        values = _CONVERTERS[vr](value, raw.is_little_endian, None)
        return SLOW if values is None else values[0]

    def _vr(self, raw: RawDataElement) -> str | None:
        """The VR pydicom gives the element, or None where it would do more than look it up
        (ambiguous VRs, sequences, LUT descriptors, deferred or undefined-length values)."""
        value = raw.value
        # pydicom gives an empty element the VR's empty value whatever the raw value (None,
        # or b"" for text in explicit VR).
        if raw.length and (type(value) is not bytes or raw.length != len(value)):
            return None
        if raw.tag in _LUT_DESCRIPTORS:
            return None
        vr = raw.VR
        if vr in _KNOWN_VRS and vr != "UN":
            return vr
        if vr is None and (entry := DicomDictionary.get(int(raw.tag))) is not None:
            # The dictionary VR, which pydicom's hook looks up first; calling the hook costs
            # more than the conversion.
            vr = entry[0]
        elif vr is None or vr == "UN":
            # Implicit VR (dictionary, private dictionary) and UN (replaced by a known VR):
            # pydicom's own lookup.
            data: dict[str, Any] = {}
            pydicom.hooks.hooks.raw_element_vr(raw, data, encoding=self._encoding(), ds=self.ds)
            vr = data["VR"]
            if vr == "UN" and not raw.tag.is_private and raw.length < 0xFFFF:
                return None  # DataElement may still replace it; leave that to pydicom
        return vr if vr in _KNOWN_VRS else None

    def _encoding(self) -> str | MutableSequence[str]:
        if self._encodings is None:
            # As Dataset.__getitem__ picks it for a raw element.
            ds = self.ds
            self._encodings = ds.original_character_set or ds._character_set
        return self._encodings

    def _codec(self, vr: str) -> str | None:
        """The codec for text in ``vr``: None for a VR without text or a character set
        Python does not know (pydicom warns and falls back then)."""
        if vr not in _CHARSET_VRS:
            return None
        if self._text_codec is SLOW:
            encodings = self._encoding() or [default_encoding]
            first = encodings if isinstance(encodings, str) else encodings[0]
            try:
                codecs.lookup(first)
                self._text_codec = first
            except LookupError:
                self._text_codec = None
        return self._text_codec  # type: ignore[return-value]


class _Slow:
    """The marker for "ask pydicom" where None is a value."""


SLOW = _Slow()
#: The marker for a binary element left out of the catalogue's copy as bulk data.
BULK = object()


def item_json(item: Dataset, threshold: int) -> dict[str, Any]:
    """A sequence item's DICOM JSON as ``Dataset.to_json_dict`` gives it without a bulk data
    handler: elements in the item's own order, binary values inline whatever their size."""
    reader = Reader(item)
    out: dict[str, Any] = {}
    elements = item._dict
    for tag in list(elements):
        raw = elements[tag]
        if isinstance(raw, RawDataElement):
            doc = reader.element_json(raw, None)
            if doc is not None:
                out[f"{tag:08X}"] = doc
                continue
        out[f"{tag:08X}"] = converted_json(item[tag], threshold)
    return out


def converted_json(elem: DataElement, threshold: int) -> dict[str, Any]:
    """``elem.to_json_dict`` without a bulk data handler, sequence items read fast."""
    if elem.VR == "SQ":
        return {"vr": elem.VR, "Value": [item_json(i, threshold) for i in elem.value]}
    return elem.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=threshold)


# --- value converters, one per VR: pydicom.values' converters followed by to_json_dict ----------


def _decode_text(value: bytes, codec: str | None) -> str | None:
    # What pydicom's decode_bytes does with a value without ISO 2022 escape sequences: decode
    # it with the first character set alone.  It warns and substitutes for bytes that do not
    # decode, and switches character sets at escapes: those go to pydicom.
    if codec is None or _ESC in value:
        return None
    try:
        return value.decode(codec)
    except Exception:
        return None


def _single(text: str) -> Values:
    return [text] if text else []


def _strings(value: bytes, little: bool, codec: str | None) -> Values | None:
    # AS, CS, DA, DT, TM: convert_string (multi_string).
    text = value.decode("latin-1").rstrip(" \x00")
    if "\\" not in text:
        return [text] if text else []
    return text.split("\\")


def _ae(value: bytes, little: bool, codec: str | None) -> Values | None:
    items = [s.strip() for s in value.decode("latin-1").split("\\")]
    return _single(items[0]) if len(items) == 1 else items


def _ui(value: bytes, little: bool, codec: str | None) -> Values | None:
    # UID() strips each value again (all whitespace, not only the padding).
    text = value.decode("latin-1").rstrip("\x00 ")
    if "\\" not in text:
        text = text.strip()
        return [text] if text else []
    return [s.strip() for s in text.split("\\")]


def _ur(value: bytes, little: bool, codec: str | None) -> Values | None:
    return _single(value.decode("latin-1").rstrip())


def _ds(value: bytes, little: bool, codec: str | None) -> Values | None:
    items = value.decode("latin-1").strip().rstrip(" \x00").split("\\")
    if len(items) == 1 and not items[0]:
        return []
    try:
        # DSfloat is float(text); a blank item stays a string there, and float() of it in
        # to_json_dict fails: pydicom raises that error.
        return [float(s) for s in items]
    except ValueError:
        return None


def _is(value: bytes, little: bool, codec: str | None) -> Values | None:
    items = value.decode("latin-1").rstrip(" \x00").split("\\")
    if len(items) == 1 and not items[0]:
        return []
    out = []
    for s in items:
        try:
            number = int(s)
            exact = number == float(s)
        except ValueError:
            return None  # IS tries float(), or keeps the string: pydicom decides
        if not exact:
            return None  # an ISfloat (or a rounding float): pydicom decides
        out.append(number)
    return out


def _text(value: bytes, little: bool, codec: str | None) -> Values | None:
    # LO, SH, UC: convert_text.
    text = _decode_text(value, codec)
    if text is None:
        return None
    if "\\" not in text:
        text = text.rstrip("\x00 ")
        return [text] if text else []
    return [s.rstrip("\x00 ") for s in text.split("\\")]


def _long_text(value: bytes, little: bool, codec: str | None) -> Values | None:
    # LT, ST, UT: convert_single_string, one value whatever its backslashes.
    text = _decode_text(value, codec)
    return None if text is None else _single(text.rstrip("\x00 "))


def _pn(value: bytes, little: bool, codec: str | None) -> Values | None:
    # convert_PN strips the padding before decoding; each PersonName drops trailing empty
    # component groups.
    text = _decode_text(value.rstrip(b"\x00 "), codec)
    if text is None:
        return None
    names = text.split("\\")
    out = []
    for name in names:
        name = name.rstrip("=")
        if not name:
            if len(names) == 1:
                return []  # an empty PersonName: no value
            return None  # to_json_dict fails on an empty name among several: pydicom raises
        components = name.split("=")
        group = {"Alphabetic": components[0]}
        if len(components) > 1:
            group["Ideographic"] = components[1]
        if len(components) > 2:
            group["Phonetic"] = components[2]
        out.append(group)
    return out


def _at(value: bytes, little: bool, codec: str | None) -> Values | None:
    if len(value) % 4:
        return None  # pydicom drops the odd bytes with a warning
    pairs = struct.unpack(f"{'<' if little else '>'}{len(value) // 2}H", value)
    return [f"{pairs[i] << 16 | pairs[i + 1]:08X}" for i in range(0, len(pairs), 2)]


def _numbers(code: str) -> _Converter:
    size = struct.calcsize("=" + code)
    one = {True: struct.Struct("<" + code).unpack, False: struct.Struct(">" + code).unpack}

    def convert(value: bytes, little: bool, codec: str | None) -> Values | None:
        if len(value) == size:
            return list(one[little](value))
        if len(value) % size:
            return None  # pydicom raises BytesLengthException
        return list(struct.unpack(f"{'<' if little else '>'}{len(value) // size}{code}", value))

    return convert


_NUMBER_CODES = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q"}
_NUMBER_SIZE = {vr: struct.calcsize("=" + code) for vr, code in _NUMBER_CODES.items()}
_CONVERTERS: dict[str, _Converter] = {
    "AE": _ae,
    "AS": _strings,
    "CS": _strings,
    "DA": _strings,
    "DT": _strings,
    "TM": _strings,
    "UI": _ui,
    "UR": _ur,
    "DS": _ds,
    "IS": _is,
    "LO": _text,
    "SH": _text,
    "UC": _text,
    "LT": _long_text,
    "ST": _long_text,
    "UT": _long_text,
    "PN": _pn,
    "AT": _at,
    "FL": _numbers("f"),
    "FD": _numbers("d"),
    **{vr: _numbers(code) for vr, code in _NUMBER_CODES.items()},
}
#: PS3.5 6.1.2.3: the VRs Specific Character Set applies to.
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
#: Text VRs whose pydicom value is a str (or UID): str(value) is the value.
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR", "LO", "SH", "UC", "LT", "ST", "UT", "PN"}
)
#: Text VRs never split at a backslash.
_SINGLE_STRING_VRS = frozenset({"LT", "ST", "UT", "UR"})
_INTEGER_VRS = frozenset({"IS", *_NUMBER_CODES})
_KNOWN_VRS = frozenset(_CONVERTERS) | _BINARY_VRS
