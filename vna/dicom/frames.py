"""Where the frames and bulk values of a stored Part 10 object sit, and how to cut them out.

Pure functions over bytes: :func:`object_layout` walks a Part 10 file's elements once
(reading element headers and a handful of small values, never pixel values) and records

- the byte span of every frame of Pixel Data, Float Pixel Data or Double Float Pixel Data:
  native data by its value offset and the bits of one frame (PS3.5 8.1.1 / 8.2: rows x
  columns x samples x bits allocated, so a 1-bit frame may start inside a byte);
  encapsulated data (PS3.5 A.4) by the fragments each frame occupies, found through the
  Extended Offset Table, else the Basic Offset Table, else one fragment per frame, else the
  end-of-image markers that close each frame's last fragment;
- the offset and length of every other bulk value (binary VRs and long values, top level and
  inside sequence items), which WADO-RS answers as bulk data (PS3.18 8.6).

The layout is recorded at ingest (vna.ingest) so that a frame or a bulk value is one ranged
read of the stored object (vna.retrieve); :func:`cut_frame` turns the bytes of that range
into the frame.  Files whose byte offsets do not map onto values (deflated data sets,
big-endian syntaxes) have no layout; the retriever then parses the whole object.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import pydicom
from pydicom.datadict import dictionary_VR

from vna.errors import InvalidInstance, InvalidRequest, NotFound

#: Version of the recorded layout; a reader that finds another rebuilds it.  2: with the CRC-32
#: of each frame and bulk value, so that a ranged read of an uncompressed object is checked.
LAYOUT_VERSION: Final = 2
#: Values longer than this are bulk data (the catalogue's DICOM JSON leaves them out).
BULK_THRESHOLD: Final = 64 * 1024
#: Binary VRs whose values are bulk data whatever their length above this many bytes.
BINARY_THRESHOLD: Final = 1024
BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS: Final = (0x7FE00010, 0x7FE00008, 0x7FE00009)

_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQ_END: Final = 0xFFFEE0DD
_IMPLICIT_LE: Final = "1.2.840.10008.1.2"
#: Byte offsets in these map to nothing in the file (deflated) or need swapping (big endian).
_UNMAPPABLE: Final = frozenset(
    {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.95"}
)
#: Native (uncompressed) syntaxes: pixel data has a defined length and no fragments.
NATIVE_SYNTAXES: Final = frozenset(
    {_IMPLICIT_LE, "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}
)
#: Extended Offset Table and its lengths (PS3.3 C.7.6.3.1.8): read whole, whatever their size.
_TABLES: Final = frozenset({0x7FE00001, 0x7FE00002})
_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<L").unpack_from
_u64 = struct.Struct("<Q").unpack_from
_tag = struct.Struct("<HH").unpack_from


@dataclass(frozen=True)
class BulkValue:
    """One bulk value: where it sits and what it is."""

    #: Tags and item indexes from the top level: ``("00420011",)``, ``("54000100", "0",
    #: "54001010")`` (items numbered from 0).
    path: tuple[str, ...]
    vr: str
    offset: int
    length: int
    #: CRC-32 of the value's bytes (None: not known).
    crc: int | None = None


@dataclass(frozen=True)
class PixelLayout:
    """Where each frame of the pixel data sits in the object."""

    tag: int
    encapsulated: bool
    number_of_frames: int
    #: Native: offset of the value and bits of one frame.
    value_offset: int = 0
    value_length: int = 0
    frame_bits: int = 0
    #: Encapsulated: per frame, the span from its first fragment's item header to the end of
    #: its last fragment.
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    #: CRC-32 of the bytes ``span`` gives for each frame (empty: not known).  A frame is one
    #: ranged read of the object, which the object's SHA-256 cannot check; this can.
    crcs: tuple[int, ...] = ()

    def crc(self, number: int) -> int | None:
        """The CRC-32 of frame ``number``'s span, when recorded."""
        return self.crcs[number - 1] if self.crcs else None

    def span(self, number: int) -> tuple[int, int]:
        """(offset, length) of the bytes to read for frame ``number`` (1-based)."""
        check_frame_number(number, self.number_of_frames)
        if self.encapsulated:
            return self.starts[number - 1], self.ends[number - 1] - self.starts[number - 1]
        first_bit = (number - 1) * self.frame_bits
        start = first_bit // 8
        end = -(-(first_bit + self.frame_bits) // 8)
        return self.value_offset + start, end - start


@dataclass(frozen=True)
class ObjectLayout:
    pixels: PixelLayout | None
    bulk: tuple[BulkValue, ...]

    def bulk_value(self, path: tuple[str, ...]) -> BulkValue:
        for value in self.bulk:
            if value.path == path:
                return value
        raise NotFound(f"no bulk data at {'/'.join(path)}")

    def to_json(self) -> dict[str, Any]:
        p = self.pixels
        return {
            "version": LAYOUT_VERSION,
            "pixels": None
            if p is None
            else {
                "tag": p.tag,
                "encapsulated": p.encapsulated,
                "frames": p.number_of_frames,
                "value_offset": p.value_offset,
                "value_length": p.value_length,
                "frame_bits": p.frame_bits,
                "starts": list(p.starts),
                "ends": list(p.ends),
                "crcs": list(p.crcs),
            },
            "bulk": [[list(b.path), b.vr, b.offset, b.length, b.crc] for b in self.bulk],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ObjectLayout | None:
        """The layout recorded, or None when recorded by another version (rebuild it)."""
        if doc.get("version") != LAYOUT_VERSION:
            return None
        p = doc["pixels"]
        pixels = (
            None
            if p is None
            else PixelLayout(
                tag=p["tag"],
                encapsulated=p["encapsulated"],
                number_of_frames=p["frames"],
                value_offset=p["value_offset"],
                value_length=p["value_length"],
                frame_bits=p["frame_bits"],
                starts=tuple(p["starts"]),
                ends=tuple(p["ends"]),
                crcs=tuple(p["crcs"]),
            )
        )
        bulk = tuple(BulkValue(tuple(b[0]), b[1], b[2], b[3], b[4]) for b in doc["bulk"])
        return cls(pixels, bulk)


def native_samples(samples_per_pixel: int, photometric: str) -> int:
    """Samples a native frame holds per pixel.  YBR_FULL_422 keeps Cb and Cr for every second
    pixel only, so a frame of three-sample pixels holds two samples per pixel (PS3.3
    C.7.6.3.1.2, PS3.5 8.2.1 for the native encoding)."""
    if samples_per_pixel == 3 and photometric.strip(" \x00") == "YBR_FULL_422":
        return 2
    return samples_per_pixel


def check_frame_number(number: int, number_of_frames: int) -> None:
    # PS3.18 8.7.3... a frame list naming a frame the instance does not have: 404 naming it.
    if number < 1 or number > number_of_frames:
        raise NotFound(
            f"frame {number} does not exist: the instance has {number_of_frames} frame(s)"
            " (NumberOfFrames)"
        )


def parse_frame_list(text: str) -> list[int]:
    """The frame numbers of a WADO-RS frame list (PS3.18 8.3.3.1: comma-separated positive
    integers, any order, repeats kept)."""
    numbers = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece.isdigit() or int(piece) < 1:
            raise InvalidRequest(f"frame list {text[:80]!r}: {piece[:20]!r} is not a frame number")
        numbers.append(int(piece))
    return numbers


def cut_frame(layout: PixelLayout, number: int, span: bytes) -> bytes:
    """Frame ``number`` from the bytes of ``layout.span(number)``.

    Native: the frame's bytes; a frame of bits that starts inside a byte (1-bit data, PS3.5
    8.1.1: the first pixel in the lowest bit) is shifted down to start at bit 0, its unused
    high bits in the last byte cleared.  Encapsulated: the values of its fragments, joined
    (PS3.5 A.4: a frame may span several fragments; item headers are framing, not data).
    """
    if layout.encapsulated:
        return b"".join(_fragment_values(span, 0, len(span)))
    first_bit = (number - 1) * layout.frame_bits
    shift = first_bit % 8
    size = -(-layout.frame_bits // 8)
    if shift == 0 and layout.frame_bits % 8 == 0:
        return span[:size]
    bits = int.from_bytes(span, "little") >> shift
    bits &= (1 << layout.frame_bits) - 1
    return bits.to_bytes(size, "little")


def _fragment_values(data: bytes, pos: int, end: int) -> list[bytes]:
    values = []
    while pos + 8 <= end:
        group, elem = _tag(data, pos)
        length = _u32(data, pos + 4)[0]
        if (group << 16 | elem) != _ITEM or pos + 8 + length > end:
            raise InvalidInstance("encapsulated pixel data: malformed fragment item")
        values.append(data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return values


# --- building the layout (at ingest) ---------------------------------------------------------


def layout_of_file(path: Path, transfer_syntax: str) -> ObjectLayout | None:
    """The layout of the Part 10 file at ``path``, mapped rather than read.  Walking it touches
    only the pages of element headers; the CRC-32 of each frame and bulk value reads the values
    once, a step at a time, giving each step's pages back as it goes (a 1 GB upload must not
    show up as 1 GB of the gateway's memory)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < 132:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return object_layout(mapped, transfer_syntax)


def worth_recording(layout: ObjectLayout | None) -> bool:
    """Whether ingest records the layout: any image or bulk values.  A single native frame
    too: its first frame request is then one ranged read checked by the frame's CRC-32,
    instead of the whole object read and checked against its SHA-256 to find where the
    frame is (measured with bench/viewer.py: a viewer's first pass over a CT series is
    most of what it asks)."""
    return layout is not None and (layout.pixels is not None or bool(layout.bulk))


def object_layout(data: bytes | mmap.mmap, transfer_syntax: str) -> ObjectLayout | None:
    """The layout of a Part 10 file held in ``data``; None when offsets in it do not map onto
    values (deflated, big endian) or it is not framed as this reader expects."""
    if transfer_syntax in _UNMAPPABLE or len(data) < 132 or data[128:132] != b"DICM":
        return None
    walker = _Walker(data, implicit=transfer_syntax == _IMPLICIT_LE)
    try:
        walker.walk_meta()
        walker.walk(walker.pos, len(data), (), depth=0)
    except (struct.error, IndexError, ValueError):
        return None
    pixels = walker.pixel_layout(transfer_syntax)
    if pixels is not None:
        spans = [pixels.span(n) for n in range(1, pixels.number_of_frames + 1)]
        pixels = replace(pixels, crcs=tuple(_crc(data, o, n) for o, n in spans))
    bulk = tuple(replace(b, crc=_crc(data, b.offset, b.length)) for b in walker.bulk)
    return ObjectLayout(pixels, bulk)


_CRC_STEP = 4 << 20


def _crc(data: bytes | mmap.mmap, offset: int, length: int) -> int:
    crc = 0
    end = offset + length
    with memoryview(data) as view:
        while offset < end:
            step = min(_CRC_STEP, end - offset)
            crc = zlib.crc32(view[offset : offset + step], crc)
            if isinstance(data, mmap.mmap):
                # The file's pages stay in the page cache; this process just stops holding them.
                start = offset - offset % mmap.PAGESIZE
                data.madvise(mmap.MADV_DONTNEED, start, offset + step - start)
            offset += step
    return crc


class _Walker:
    def __init__(self, data: bytes | mmap.mmap, implicit: bool) -> None:
        self.data = data
        self.implicit = implicit
        self.pos = 132
        self.bulk: list[BulkValue] = []
        #: Small top-level values the frame arithmetic needs.
        self.values: dict[int, bytes] = {}
        self.pixel: tuple[int, str, int, int] | None = None  # tag, vr, offset, length
        self.fragments: list[tuple[int, int]] = []  # item header offset, value length
        self.bot: bytes = b""

    def walk_meta(self) -> None:
        data, pos = self.data, 132
        while pos + 8 <= len(data) and _u16(data, pos)[0] == 0x0002:
            vr = data[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                pos += 12 + _u32(data, pos + 8)[0]
            else:
                pos += 8 + _u16(data, pos + 6)[0]
        self.pos = pos
        # A data set encoded otherwise than its syntax says (as pydicom tolerates): judged by
        # whether the first element carries two upper-case letters where an explicit VR goes.
        vr = data[pos + 4 : pos + 6]
        if pos + 8 <= len(data):
            self.implicit = not (len(vr) == 2 and vr.isalpha() and vr.isupper())

    def _header(self, pos: int) -> tuple[int, str, int, int]:
        """(tag, VR, value offset, length) of the element at ``pos``."""
        data = self.data
        group, elem = _tag(data, pos)
        tag = group << 16 | elem
        if group == 0xFFFE:
            return tag, "", pos + 8, _u32(data, pos + 4)[0]
        if self.implicit:
            length = _u32(data, pos + 4)[0]
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = "UN"
            if length == _UNDEFINED and tag not in PIXEL_TAGS:
                vr = "SQ"  # PS3.5 7.5.1: undefined length in implicit VR is a sequence
            elif " or " in vr:
                vr = "OB" if tag in PIXEL_TAGS and length == _UNDEFINED else vr[:2]
            return tag, vr, pos + 8, length
        vr_raw = data[pos + 4 : pos + 6]
        vr = vr_raw.decode("ascii")
        if vr_raw in _LONG_VRS:
            return tag, vr, pos + 12, _u32(data, pos + 8)[0]
        return tag, vr, pos + 8, _u16(data, pos + 6)[0]

    def walk(self, pos: int, end: int, path: tuple[str, ...], depth: int) -> int:
        """Walk the elements from ``pos`` to ``end`` (or an item delimiter); the position
        after them."""
        if depth > 16:
            raise ValueError("sequences nested too deep")
        data = self.data
        while pos + 8 <= end:
            tag, vr, value, length = self._header(pos)
            if tag == _ITEM_END:
                return value
            name = f"{tag:08X}"
            if tag in PIXEL_TAGS and length == _UNDEFINED:
                # Encapsulated: the top-level one is the image; one in a sequence item (an
                # icon, PS3.3 C.7.6.1.1.6) is passed over.
                pos, bot, fragments = self._fragments(value)
                if depth == 0:
                    self.pixel = (tag, "OB", value, _UNDEFINED)
                    self.bot, self.fragments = bot, fragments
                continue
            if tag in PIXEL_TAGS and depth == 0:
                self.pixel = (tag, vr, value, length)
                pos = value + length
                continue
            if vr == "SQ" or (vr == "UN" and length == _UNDEFINED):
                implicit, self.implicit = self.implicit, self.implicit or vr == "UN"
                try:
                    pos = self._sequence(value, length, (*path, name), depth)
                finally:
                    self.implicit = implicit
                continue
            if length == _UNDEFINED:
                raise ValueError("undefined length on a value that is not a sequence")
            if depth == 0 and (length <= 64 or tag in _TABLES):
                self.values[tag] = data[value : value + length]
            if length > BULK_THRESHOLD or (vr in BINARY_VRS and length > BINARY_THRESHOLD):
                self.bulk.append(BulkValue((*path, name), vr, value, length))
            pos = value + length
        if pos > end:
            raise ValueError("element runs past its container")
        return pos

    def _sequence(self, pos: int, length: int, path: tuple[str, ...], depth: int) -> int:
        end = len(self.data) if length == _UNDEFINED else pos + length
        index = 0
        while pos + 8 <= end:
            tag, _, value, item_length = self._header(pos)
            if tag == _SEQ_END:
                return value
            if tag != _ITEM:
                raise ValueError("sequence holds something other than items")
            item_end = end if item_length == _UNDEFINED else value + item_length
            after = self.walk(value, item_end, (*path, str(index)), depth + 1)
            pos = after if item_length == _UNDEFINED else item_end
            index += 1
        return end if length != _UNDEFINED else pos

    def _fragments(self, pos: int) -> tuple[int, bytes, list[tuple[int, int]]]:
        """Walk encapsulated pixel data items (PS3.5 A.4): the position after them, the Basic
        Offset Table and each fragment's (item offset, length)."""
        data = self.data
        first = True
        bot = b""
        fragments: list[tuple[int, int]] = []
        while True:
            group, elem = _tag(data, pos)
            tag = group << 16 | elem
            length = _u32(data, pos + 4)[0]
            if tag == _SEQ_END:
                return pos + 8, bot, fragments
            if tag != _ITEM or length == _UNDEFINED or pos + 8 + length > len(data):
                raise ValueError("malformed encapsulated pixel data")
            if first:
                bot = data[pos + 8 : pos + 8 + length]
                first = False
            else:
                fragments.append((pos, length))
            pos += 8 + length

    def _int(self, tag: int, default: int) -> int:
        raw = self.values.get(tag)
        if raw is None:
            return default
        if tag == 0x00280008:  # IS, text
            text = raw.decode("ascii", "replace").strip(" \x00")
            return int(text) if text.isdigit() else default
        return _u16(raw, 0)[0] if len(raw) >= 2 else default

    def pixel_layout(self, transfer_syntax: str) -> PixelLayout | None:
        if self.pixel is None:
            return None
        tag, vr, offset, length = self.pixel
        frames = max(self._int(0x00280008, 1), 1)
        if length != _UNDEFINED:
            photometric = self.values.get(0x00280004, b"").decode("ascii", "replace")
            bits = (
                self._int(0x00280010, 0)
                * self._int(0x00280011, 0)
                * native_samples(self._int(0x00280002, 1), photometric)
                * self._int(0x00280100, 8 if vr == "OB" else 16)
            )
            if bits == 0:
                return None
            # A value shorter than NumberOfFrames claims holds only the frames it has.
            frames = min(frames, length * 8 // bits)
            return PixelLayout(tag, False, frames, offset, length, bits)
        groups = _frame_fragments(
            self.fragments,
            frames,
            self.bot,
            self.values.get(0x7FE00001),
            self.values.get(0x7FE00002),
            lambda pos, n: self.data[pos + 8 + n - 3 : pos + 8 + n],
        )
        starts = tuple(self.fragments[g[0]][0] for g in groups)
        ends = tuple(self.fragments[g[-1]][0] + 8 + self.fragments[g[-1]][1] for g in groups)
        return PixelLayout(tag, True, len(groups), starts=starts, ends=ends)


def _frame_fragments(
    fragments: list[tuple[int, int]],
    frames: int,
    bot: bytes,
    eot: bytes | None,
    eot_lengths: bytes | None,
    tail: Any,
) -> list[list[int]]:
    """The fragment indexes of each frame (PS3.5 A.4)."""
    if not fragments:
        return []
    first = fragments[0][0]
    index_at = {pos - first: i for i, (pos, _) in enumerate(fragments)}
    offsets: list[int] | None = None
    if eot:
        # Extended Offset Table (7FE0,0001): 64-bit offsets of each frame's first fragment item
        # from the first fragment item (PS3.5 A.4, PS3.3 C.7.6.3.1.8).
        offsets = [_u64(eot, 8 * i)[0] for i in range(len(eot) // 8)]
    elif bot:
        offsets = [_u32(bot, 4 * i)[0] for i in range(len(bot) // 4)]
    if offsets is not None and all(o in index_at for o in offsets) and offsets == sorted(offsets):
        marks = [index_at[o] for o in offsets] + [len(fragments)]
        return [list(range(marks[i], marks[i + 1])) for i in range(len(offsets))]
    if frames <= 1:
        return [list(range(len(fragments)))]
    if len(fragments) == frames:
        return [[i] for i in range(len(fragments))]
    # No usable table and more fragments than frames: a frame ends with the fragment whose
    # codestream ends with the end-of-image / end-of-codestream marker FFD9 (JPEG, JPEG-LS,
    # JPEG 2000), possibly followed by the pad byte that keeps fragments even (PS3.5 A.4).
    groups: list[list[int]] = []
    current: list[int] = []
    for i, (pos, length) in enumerate(fragments):
        current.append(i)
        end = tail(pos, length)
        if end[-2:] == b"\xff\xd9" or end == b"\xff\xd9\x00":
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    if len(groups) != frames:
        raise ValueError("cannot tell the frames of encapsulated pixel data apart")
    return groups


def parsed_pixels(data: bytes) -> tuple[PixelLayout, bytes] | None:
    """For an object without a layout (deflated, big endian): its pixel data parsed by
    pydicom, as a layout over the value alone (offsets from 0) and the value, native data
    little endian (PS3.18 8.7.3.5.2: native frames are sent in Explicit VR Little Endian)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:  # pydicom raises many types on data it cannot read
        return None
    tag = next((t for t in PIXEL_TAGS if t in ds), None)
    if tag is None:
        return None
    elem = ds[tag]
    value = bytes(elem.value)
    frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    if elem.is_undefined_length:
        # The value as pydicom holds it: the items (offset table first), no delimiter.
        wrapped = value + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        walker = _Walker(wrapped, implicit=False)
        try:
            _, walker.bot, walker.fragments = walker._fragments(0)
        except (struct.error, ValueError):
            return None
        walker.pixel = (tag, "OB", 0, _UNDEFINED)
        walker.values[0x00280008] = str(frames).encode()
        layout = walker.pixel_layout("")
        return None if layout is None else (layout, wrapped)
    if not ds.is_little_endian and elem.VR in ("OW", "OF", "OL", "OD", "OV"):
        width = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}[elem.VR]
        value = b"".join(value[i : i + width][::-1] for i in range(0, len(value), width))
    bits = (
        int(ds.get("Rows", 0))
        * int(ds.get("Columns", 0))
        * native_samples(
            int(ds.get("SamplesPerPixel", 1)), str(ds.get("PhotometricInterpretation", ""))
        )
        * int(ds.get("BitsAllocated", 8))
    )
    if bits == 0:
        return None
    frames = min(frames, len(value) * 8 // bits)
    return PixelLayout(tag, False, frames, 0, len(value), bits), value
