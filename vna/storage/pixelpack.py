"""Objects compressed at rest with a lossless image codec, rebuilt byte for byte ("pixel packs").

A pixel pack holds a Part 10 file received in a native (uncompressed) little-endian transfer
syntax as a series of *segments*, each standing for one contiguous run of the original bytes:

* ``z`` segments: original bytes zstandard-compressed (the header as received, up to the
  Pixel Data value, and whatever follows the last frame: a padding byte, trailing elements),
  at most ``seekable.CHUNK`` original bytes each, so a bulk value in the header is a ranged
  read too;
* ``f`` segments: one native frame each, coded with the image codec (JPEG-LS, JPEG 2000 or
  HTJ2K, vna.dicom.pixel_codecs): the frame's codestream as a DICOM encapsulated frame of
  that syntax would carry it.

Layout of the object::

    b"VNAPIX01" | segment 0 | segment 1 | ... | index (zstd-compressed JSON) | footer

footer (16 bytes): index length (u32 LE), CRC-32 of the compressed index (u32 LE), and
``b"VNAPXEND"``.  The index gives the original size, the codec's transfer syntax, the pixel
description (vna.dicom.pixel_codecs.PixelInfo) and, per segment, its kind, its place in the
original, its place in the object and the CRC-32 of the original bytes it stands for.

Reading a byte range of the original (a frame, a bulk value) reads the footer, the index
(both cached by the retriever) and only the segments that hold the range, and decodes only
those.  Every decoded segment is checked against its CRC-32 and length; a whole read is
checked against the catalogued SHA-256 by its readers (retrieve, fixity, replication).
``frame_payload`` gives the stored range of one frame's codestream, so a request for the
codec's own transfer syntax is answered without decoding.

Writing a pack (``pack``) decodes every frame again and compares it with the original frame
before the pack is returned: a frame that does not survive its codec raises, and the caller
(the lifecycle) keeps the object in another form.  The lifecycle also rebuilds the whole
original from the pack and compares its SHA-256 with the catalogue's before switching to it.
"""

from __future__ import annotations

import bisect
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import zstandard

from vna.dicom import pixel_codecs
from vna.dicom.pixel_codecs import NotRepresentable, PixelInfo
from vna.errors import StorageError
from vna.storage.seekable import CHUNK

MAGIC: Final = b"VNAPIX01"
END_MAGIC: Final = b"VNAPXEND"
FOOTER_SIZE: Final = 16
#: Key suffix of a pixel pack.
SUFFIX: Final = ".vpx"
VERSION: Final = 1
_footer = struct.Struct("<LL8s")

#: Compression values of the catalogue (instances.compression) for each image codec, and the
#: transfer syntax its frames are coded in.
CODEC_SYNTAXES: Final = {
    "jpeg-ls": pixel_codecs.JPEG_LS_LOSSLESS,
    "jpeg2000": pixel_codecs.JPEG_2000_LOSSLESS,
    # RPCL progression, but OpenJPH 0.9 writes no TLM marker segments, which HTJ2K Lossless
    # RPCL (1.2.840.10008.1.2.4.202) asks for: declared as HTJ2K Lossless.
    "htj2k": pixel_codecs.HTJ2K_LOSSLESS,
}
IMAGE_CODECS: Final = frozenset(CODEC_SYNTAXES)


def is_pack_key(key: str) -> bool:
    return key.endswith(SUFFIX)


def codec_of_syntax(syntax_uid: str) -> str:
    for codec, uid in CODEC_SYNTAXES.items():
        if uid == syntax_uid:
            return codec
    raise StorageError(f"pixel pack coded in unknown transfer syntax {syntax_uid}")


@dataclass(frozen=True)
class Segment:
    kind: str  # "z" (zstandard) or "f" (one frame, image codec)
    start: int  # in the original
    length: int
    stored_start: int  # in the object
    stored_length: int
    crc: int

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class PackIndex:
    size: int
    syntax: str
    info: PixelInfo
    segments: tuple[Segment, ...]

    @property
    def codec(self) -> str:
        return codec_of_syntax(self.syntax)

    @property
    def frames(self) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if s.kind == "f")

    def segments_for(self, start: int, length: int) -> tuple[int, int]:
        """The first segment and one past the last that hold bytes [start, start + length)."""
        starts = [s.start for s in self.segments]
        first = max(bisect.bisect_right(starts, start) - 1, 0)
        last = bisect.bisect_left(starts, start + length)
        return first, max(last, first + 1)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": VERSION,
                "size": self.size,
                "syntax": self.syntax,
                "info": self.info.to_json(),
                "segments": [
                    [s.kind, s.start, s.length, s.stored_start, s.stored_length, s.crc]
                    for s in self.segments
                ],
            },
            separators=(",", ":"),
        ).encode()


def frame_payload(index: PackIndex, number: int) -> tuple[int, int]:
    """(offset, length) in the stored object of frame ``number``'s codestream (1-based), in
    transfer syntax ``index.syntax``: the bytes an encapsulated frame of that syntax carries,
    to serve without decoding (transcoding on retrieve reads them with a ranged read)."""
    frames = index.frames
    if not 1 <= number <= len(frames):
        raise StorageError(f"pixel pack has no frame {number} (it has {len(frames)})")
    seg = frames[number - 1]
    return seg.stored_start, seg.stored_length


def pack(
    data: bytes,
    pixel_offset: int,
    pixel_length: int,
    number_of_frames: int,
    info: PixelInfo,
    syntax: str,
    level: int = 3,
) -> bytes:
    """The pack of a whole original ``data`` whose native Pixel Data value is at
    [pixel_offset, pixel_offset + pixel_length) and holds ``number_of_frames`` frames.

    Raises NotRepresentable when the pixel data does not go through the codec losslessly, and
    pixel_codecs.CodecError/CodecUnavailable when the codec fails or is missing."""
    frame_size = info.frame_size
    frames_end = pixel_offset + number_of_frames * frame_size
    if number_of_frames < 1 or frame_size < 1 or frames_end > pixel_offset + pixel_length:
        raise NotRepresentable(
            f"Pixel Data of {pixel_length} bytes does not hold {number_of_frames} frame(s) of"
            f" {frame_size} bytes"
        )
    if frames_end > len(data):
        raise NotRepresentable("Pixel Data runs past the end of the object")
    compressor = zstandard.ZstdCompressor(level=level)
    out = bytearray(MAGIC)
    segments: list[Segment] = []

    def add(kind: str, start: int, original: bytes, stored: bytes) -> None:
        segments.append(
            Segment(kind, start, len(original), len(out), len(stored), zlib.crc32(original))
        )
        out.extend(stored)

    def add_plain(start: int, end: int) -> None:
        for pos in range(start, end, CHUNK):
            piece = data[pos : min(pos + CHUNK, end)]
            add("z", pos, piece, compressor.compress(piece))

    add_plain(0, pixel_offset)
    for i in range(number_of_frames):
        start = pixel_offset + i * frame_size
        frame = data[start : start + frame_size]
        coded = pixel_codecs.encode_frame(frame, info, syntax)
        if pixel_codecs.decode_frame(coded, info, syntax) != frame:
            raise NotRepresentable(f"frame {i + 1} does not decode to the original samples")
        add("f", start, frame, coded)
    add_plain(frames_end, len(data))
    index = PackIndex(len(data), syntax, info, tuple(segments))
    body = zstandard.ZstdCompressor(level=level).compress(index.to_json())
    out += body
    out += _footer.pack(len(body), zlib.crc32(body), END_MAGIC)
    return bytes(out)


def index_size(footer: bytes, key: str) -> int:
    """Bytes of the index and footer at the end of the object, from its last 16 bytes."""
    if len(footer) != FOOTER_SIZE:
        raise StorageError(f"pixel pack {key} is truncated (no footer)")
    length, _, magic = _footer.unpack(footer)
    if magic != END_MAGIC:
        raise StorageError(f"pixel pack {key} has no index")
    return length + FOOTER_SIZE


def parse_index(tail: bytes, key: str) -> PackIndex:
    """The index from the object's last ``index_size`` bytes."""
    length, crc, magic = _footer.unpack_from(tail, len(tail) - FOOTER_SIZE)
    body = tail[: len(tail) - FOOTER_SIZE]
    if magic != END_MAGIC or len(body) != length or zlib.crc32(body) != crc:
        raise StorageError(f"pixel pack {key} has a damaged index")
    try:
        doc = json.loads(zstandard.ZstdDecompressor().decompress(body))
        if doc["version"] != VERSION:
            raise StorageError(f"pixel pack {key} is of unknown version {doc['version']}")
        segments = tuple(Segment(*row) for row in doc["segments"])
        return PackIndex(
            int(doc["size"]), str(doc["syntax"]), PixelInfo.from_json(doc["info"]), segments
        )
    except (zstandard.ZstdError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"pixel pack {key} has a damaged index: {exc}") from exc


def read_index(blob: bytes, key: str) -> PackIndex:
    """The index of a whole object in memory."""
    if not blob.startswith(MAGIC):
        raise StorageError(f"object {key} is not a pixel pack")
    n = index_size(blob[-FOOTER_SIZE:], key)
    if n > len(blob) - len(MAGIC):
        raise StorageError(f"pixel pack {key} is truncated")
    return parse_index(blob[-n:], key)


def decode_segment(stored: bytes | memoryview, seg: Segment, index: PackIndex, key: str) -> bytes:
    """The original bytes of one segment from its stored bytes, checked by CRC and length."""
    try:
        if seg.kind == "z":
            out = zstandard.ZstdDecompressor().decompress(stored, max_output_size=seg.length)
        elif seg.kind == "f":
            out = pixel_codecs.decode_frame(stored, index.info, index.syntax)
        else:
            raise StorageError(f"pixel pack {key} has a segment of unknown kind {seg.kind!r}")
    except (zstandard.ZstdError, pixel_codecs.CodecError) as exc:
        raise StorageError(f"pixel pack {key} is corrupt (at byte {seg.start}): {exc}") from exc
    if len(out) != seg.length or zlib.crc32(out) != seg.crc:
        raise StorageError(f"pixel pack {key} is corrupt (segment at byte {seg.start})")
    return out


def decode_segments(
    stored: bytes | memoryview, index: PackIndex, first: int, last: int, key: str
) -> Iterator[bytes]:
    """Segments ``first`` to ``last`` (exclusive) decoded, from the object's bytes starting
    at segment ``first``'s stored start."""
    base = index.segments[first].stored_start
    for seg in index.segments[first:last]:
        piece = stored[seg.stored_start - base : seg.stored_start - base + seg.stored_length]
        if len(piece) != seg.stored_length:
            raise StorageError(f"pixel pack {key} is truncated")
        yield decode_segment(piece, seg, index, key)


def unpack(blob: bytes, key: str = "object") -> bytes:
    """The whole original from a whole pack."""
    index = read_index(blob, key)
    first = index.segments[0].stored_start if index.segments else len(MAGIC)
    out = b"".join(decode_segments(blob[first:], index, 0, len(index.segments), key))
    if len(out) != index.size:
        raise StorageError(f"pixel pack {key} rebuilds {len(out)} of {index.size} bytes")
    return out
