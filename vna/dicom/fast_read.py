"""A fast reader for the header of a simple DICOM Part 10 file.

``pydicom.dcmread(..., stop_before_pixels=True)`` walks the elements with a general-purpose
generator (file reads, callbacks, per-element branching) and costs about a millisecond for a CT
slice. Most instances the archive receives are simple: little-endian, every top-level element of
defined length. For those, :func:`read_header` frames the elements in one loop over the bytes
and hands pydicom's own classes exactly the raw elements pydicom's reader would have made, so
the result is indistinguishable from pydicom's. Anything else - and any doubt - gives ``None``
and the caller asks pydicom.
"""

from __future__ import annotations

import io
from struct import Struct
from typing import Any, Final, NamedTuple

import pydicom
from pydicom import uid as pydicom_uid
from pydicom.charset import convert_encodings, default_encoding, python_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import ENCODED_VR
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.values import convert_string

__all__ = ["Framed", "read_framed", "read_header"]

_PREFIX_END: Final = 132  # 128-byte preamble + b"DICM"
_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
_ITEM_GROUP: Final = 0xFFFE
# Every tag pydicom's reader treats specially at the top level has a group at least this big:
# checking one comparison per element keeps those checks out of the common path.
_SPECIAL_GROUPS: Final = 0x7FE0
# Pixel Data, Float Pixel Data, Double Float Pixel Data: where stop_before_pixels stops.
_PIXEL_TAGS: Final = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_SPECIFIC_CHARACTER_SET: Final = 0x00080005
_GROUP_LENGTH: Final = 0x00020000
_TRANSFER_SYNTAX: Final = 0x00020010

_explicit_header = Struct("<HH2sH").unpack_from
_implicit_header = Struct("<HHL").unpack_from
_uint32 = Struct("<L").unpack_from

#: The two bytes of every VR pydicom reads as explicit -> (the VR as pydicom decodes it, whether
#: a reserved field and 32-bit length follow). Multi-VR names ("US or SS") never match 2 bytes.
_VRS: Final[dict[bytes, tuple[str, bool]]] = {
    raw: (raw.decode(default_encoding), raw.decode(default_encoding) in EXPLICIT_VR_LENGTH_32)
    for raw in ENCODED_VR
    if len(raw) == 2
}

_IMPLICIT_VR_LE: Final = str(pydicom_uid.ImplicitVRLittleEndian)
#: Syntaxes pydicom reads as explicit VR little endian without transforming the data set first
#: (read_partial's catch-all branch). Anything with a deflated data set is left to pydicom, also
#: the JPIP deflate syntaxes pydicom does not recognise as deflated.
_EXPLICIT_LE: Final = frozenset(
    str(ts)
    for ts in pydicom_uid.AllTransferSyntaxes
    if ts.is_little_endian
    and not ts.is_implicit_VR
    and not ts.is_deflated
    and "deflate" not in ts.name.lower()
)

# RawDataElement is a NamedTuple: building it with tuple.__new__ skips its generated __new__,
# a large part of the per-element cost. The loops spell out every field, the last two with
# pydicom's defaults (is_raw=True, is_buffered=False).
_new_tuple = tuple.__new__
_RAW_FIELDS: Final = (
    "tag",
    "VR",
    "length",
    "value",
    "value_tell",
    "is_implicit_VR",
    "is_little_endian",
    "is_raw",
    "is_buffered",
)


def _usable() -> bool:
    """Whether this module still mirrors the installed pydicom. What it mirrors (read_partial,
    read_dataset, the element generator) is pydicom 3.0's; another pydicom gets no fast path
    until the oracle tests pass against it and this check is widened."""
    return (
        pydicom.__version__.split(".")[:2] == ["3", "0"]
        and RawDataElement._fields == _RAW_FIELDS
        and RawDataElement._field_defaults == {"is_raw": True, "is_buffered": False}
    )


_USABLE: Final = _usable()

#: BaseTag per tag number, shared by every header read: building a BaseTag costs more than
#: looking one up, and tags are immutable ints. Bounded, as private tags are unbounded.
_TAGS: dict[int, BaseTag] = {}
_MAX_CACHED_TAGS: Final = 16384


class Framed(NamedTuple):
    """A header read by :func:`read_framed`, and how far its framing was checked."""

    dataset: FileDataset
    #: Where the first element not read starts (Pixel Data), or the end of the data: every
    #: element before it, file meta included, lies whole within the data.
    stop: int
    #: Whether the data set is implicit VR.
    implicit: bool


def read_header(data: bytes) -> FileDataset | None:
    """The header of the Part 10 file ``data`` as
    ``pydicom.dcmread(BytesIO(data), stop_before_pixels=True)`` would return it, or None where
    only pydicom can say."""
    framed = read_framed(data)
    return framed.dataset if framed is not None else None


def read_framed(data: bytes) -> Framed | None:
    """:func:`read_header`, with where its check of the element framing stopped, so that a
    caller checking the whole file need only go on from there."""
    if not _USABLE:
        return None
    if type(data) is not bytes:
        data = bytes(data)
    end = len(data)
    if end < _PREFIX_END or data[128:_PREFIX_END] != b"DICM":
        return None

    parsed = _read_meta(data, end)
    if parsed is None:
        return None
    meta_raw, pos = parsed

    transfer_syntax = _transfer_syntax(meta_raw)
    if transfer_syntax == _IMPLICIT_VR_LE:
        implicit = True
    elif transfer_syntax in _EXPLICIT_LE:
        implicit = False
    else:
        return None
    if transfer_syntax in pydicom_uid.PrivateTransferSyntaxes:
        # A registered private syntax carries its own encoding and wins in pydicom's reader.
        return None

    # pydicom reads any leading group 0000 (command set) elements separately and looks at the
    # first element to decide whether the syntax lied about implicit/explicit VR. Both happen
    # in the rare files only pydicom should handle.
    if pos + 8 > end:
        return None
    first_group = data[pos] | data[pos + 1] << 8
    if first_group == 0:
        return None
    looks_explicit = 0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B
    if looks_explicit == implicit:
        return None

    read = _read_implicit if implicit else _read_explicit
    framed = read(data, pos, end)
    if framed is None:
        return None
    raw, stop = framed
    ds = _assemble(data, meta_raw, raw, stop, implicit, transfer_syntax)
    return Framed(ds, stop, implicit) if ds is not None else None


def _read_meta(data: bytes, end: int) -> tuple[dict[BaseTag, Any], int] | None:
    """The group 0002 elements after the prefix, and where the data set starts."""
    raw: dict[BaseTag, Any] = {}
    pos = _PREFIX_END
    vrs = _VRS
    while True:
        if pos + 8 > end:
            # A file that ends inside the file meta has no data set to read quickly.
            return None
        group, elem, vr_bytes, length = _explicit_header(data, pos)
        if group != 2:
            break
        vr_info = vrs.get(vr_bytes)
        if vr_info is None:
            return None
        vr, long_length = vr_info
        if long_length:
            if pos + 12 > end:
                return None
            length = _uint32(data, pos + 8)[0]
            value_pos = pos + 12
        else:
            value_pos = pos + 8
        next_pos = value_pos + length
        if length == _UNDEFINED_LENGTH or next_pos > end:
            return None
        tag = BaseTag(0x00020000 | elem)
        value = data[value_pos:next_pos] if length else empty_value_for_VR(vr, raw=True)
        raw[tag] = _new_tuple(
            RawDataElement, (tag, vr, length, value, value_pos, False, True, True, False)
        )
        pos = next_pos
    if not raw:
        return None
    return raw, pos


def _transfer_syntax(meta_raw: dict[BaseTag, Any]) -> str | None:
    """The Transfer Syntax UID as pydicom will decode it, or None if it is not one plain UID."""
    elem = meta_raw.get(_TRANSFER_SYNTAX)  # type: ignore[call-overload]
    if elem is None or elem.VR != "UI" or not elem.value:
        return None
    value: str = elem.value.decode(default_encoding).rstrip("\0 ")
    if "\\" in value:
        return None
    return value


def _read_explicit(data: bytes, pos: int, end: int) -> tuple[dict[BaseTag, Any], int] | None:
    """Frame explicit VR little endian elements from ``pos`` to the end or the pixel data."""
    raw: dict[BaseTag, Any] = {}
    vrs = _VRS
    header = _explicit_header
    uint32 = _uint32
    new = _new_tuple
    raw_type = RawDataElement
    tags = _TAGS
    while pos < end:
        if pos + 8 > end:
            return None
        group, elem, vr_bytes, length = header(data, pos)
        vr_info = vrs.get(vr_bytes)
        if vr_info is None:
            # pydicom would guess (implicit switch or 2-byte length): leave it to pydicom.
            return None
        vr, long_length = vr_info
        if long_length:
            if pos + 12 > end:
                return None
            length = uint32(data, pos + 8)[0]
            value_pos = pos + 12
        else:
            value_pos = pos + 8
        tag_int = group << 16 | elem
        if group >= _SPECIAL_GROUPS:
            if group == _ITEM_GROUP:
                return None
            if tag_int in _PIXEL_TAGS:
                return raw, pos
        next_pos = value_pos + length
        if next_pos > end or length == _UNDEFINED_LENGTH:
            return None
        tag = tags.get(tag_int)
        if tag is None:
            tag = _new_tag(tag_int)
        raw[tag] = new(
            raw_type,
            (
                tag,
                vr,
                length,
                data[value_pos:next_pos] if length else empty_value_for_VR(vr, raw=True),
                value_pos,
                False,
                True,
                True,
                False,
            ),
        )
        pos = next_pos
    return raw, pos


def _read_implicit(data: bytes, pos: int, end: int) -> tuple[dict[BaseTag, Any], int] | None:
    """Frame implicit VR little endian elements from ``pos`` to the end or the pixel data."""
    raw: dict[BaseTag, Any] = {}
    header = _implicit_header
    new = _new_tuple
    raw_type = RawDataElement
    tags = _TAGS
    # pydicom asks for the empty value with VR None: the same for every implicit element.
    empty = empty_value_for_VR(None, raw=True)
    while pos < end:
        if pos + 8 > end:
            return None
        group, elem, length = header(data, pos)
        tag_int = group << 16 | elem
        if group >= _SPECIAL_GROUPS:
            if group == _ITEM_GROUP:
                return None
            if tag_int in _PIXEL_TAGS:
                return raw, pos
        value_pos = pos + 8
        next_pos = value_pos + length
        if next_pos > end or length == _UNDEFINED_LENGTH:
            return None
        tag = tags.get(tag_int)
        if tag is None:
            tag = _new_tag(tag_int)
        raw[tag] = new(
            raw_type,
            (
                tag,
                None,
                length,
                data[value_pos:next_pos] if length else empty,
                value_pos,
                True,
                True,
                True,
                False,
            ),
        )
        pos = next_pos
    return raw, pos


def _new_tag(tag_int: int) -> BaseTag:
    tag = BaseTag(tag_int)
    if len(_TAGS) < _MAX_CACHED_TAGS:
        _TAGS[tag_int] = tag
    return tag


def _assemble(
    data: bytes,
    meta_raw: dict[BaseTag, Any],
    raw: dict[BaseTag, Any],
    stop: int,
    implicit: bool,
    transfer_syntax: str,
) -> FileDataset | None:
    """Wrap the raw elements in pydicom's classes as dcmread's read_partial does, converting the
    elements its reader converts on the way, so ``_dict`` holds the same mix of raw and decoded
    elements."""
    try:
        meta = FileMetaDataset(meta_raw)
        meta.set_original_encoding(False, True, default_encoding)
        # pydicom lists the file meta elements to decode the lowest (to test the explicit VR
        # reading); listing decodes those whose raw value is None, as if their reading had
        # been deferred (empty values of most binary VRs). It then decodes the group length
        # (to compare it with the real length) and the transfer syntax.
        empty = [tag for tag, elem in meta_raw.items() if elem.value is None]
        for tag in sorted(empty, key=int):
            _decode(meta, tag)
        _decode(meta, min(meta_raw, key=int))
        if _GROUP_LENGTH in meta_raw:
            _decode(meta, BaseTag(_GROUP_LENGTH))
        ts_tag = BaseTag(_TRANSFER_SYNTAX)
        _decode(meta, ts_tag)
        if meta._dict[ts_tag].value != transfer_syntax:
            return None

        charset = raw.get(_SPECIFIC_CHARACTER_SET)  # type: ignore[call-overload]
        if charset is not None and not _plain_charset(charset):
            # pydicom resolves the raw value twice more (its element reader, for sequences it
            # reads, and read_dataset, for a Dataset it drops); neither result reaches the data
            # set, but their warnings (or, in RAISE mode, errors) show, so make the same calls.
            # A plain defined term has neither.
            convert_encodings(convert_string(charset.value or b"", True))
            convert_encodings(convert_raw_data_element(charset).value)

        buffer = io.BytesIO(data)
        # Where pydicom leaves the file: at the start of the element it stopped before.
        buffer.seek(stop)
        # read_partial wraps read_dataset's Dataset, of which FileDataset keeps only ``_dict``
        # (the same dict object as ``raw``) and whose original encoding it sets again below.
        ds = FileDataset(buffer, raw, data[:128], meta, implicit, True)
        if charset is not None:
            # pydicom's last step decodes Specific Character Set into ``_dict``.
            _decode(ds, charset.tag)
        ds.set_original_encoding(implicit, True, ds._character_set)
    except Exception:
        # Whatever pydicom's own decoding rejects, pydicom should report itself.
        return None
    return ds


def _decode(ds: Dataset, tag: BaseTag) -> None:
    """Replace the raw element at ``tag`` with its decoded element as ``ds[tag]`` does.

    ``ds[tag]`` costs as much again as the decoding: it chooses the character set, stores the
    element through ``__setitem__``'s checks, and looks it up twice more for the follow-ups
    of sequences and ambiguous VRs. For the elements decoded here (file meta, and Specific
    Character Set, which pydicom always decodes with the default character set) those choices
    are known: the decoding character set is the default one, the tags are public and the VR
    is neither SQ nor ambiguous - unless the raw VR is SQ or UN (which pydicom may replace), so
    those take the long way.
    """
    raw = ds._dict[tag]
    if not isinstance(raw, RawDataElement):
        return  # decoded already
    vr = raw.VR
    if vr == "SQ" or vr == "UN" or (vr is None and tag != _SPECIFIC_CHARACTER_SET):
        ds[tag]
        return
    ds._dict[tag] = convert_raw_data_element(raw, encoding=default_encoding, ds=ds)


def _plain_charset(raw: RawDataElement) -> bool:
    """Whether the raw Specific Character Set is a CS value of one term pydicom maps without
    a correction."""
    value = raw.value
    return (
        (raw.VR == "CS" or raw.VR is None)
        and type(value) is bytes
        and value.decode(default_encoding) in python_encoding
    )
