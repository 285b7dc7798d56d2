"""Objects compressed at rest in the zstandard seekable format: randomly readable.

The lifecycle compresses an object as a series of independent zstandard frames, each of
``CHUNK`` uncompressed bytes, followed by a seek table in a skippable frame: the format of
zstd's ``contrib/seekable_format`` (zstd_seekable_compression_format.md), so ``zstd -d`` and
any zstandard decoder read the object whole, and a reader that wants a byte range of the
original reads the 9-byte footer and the table, then only the frames that hold the range.

What protects a ranged read: every frame carries its own content checksum (XXH64, written at
compression and checked by the decoder), and each frame must decompress to exactly the size
the table gives; a damaged or truncated frame fails the read.  The whole-object digest
(instances.sha256) cannot be checked on a range; it is checked when the lifecycle writes the
object (the compressed form must decompress to the catalogued digest) and by fixity runs.

Objects compressed before this format (one zstandard frame, key suffix ``.zst``) stay
readable as a whole; the key suffix ``.szst`` names the seekable form.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Final

import zstandard

from vna.errors import StorageError

#: Uncompressed bytes per frame: small enough that one frame of a multi-frame image costs a
#: fraction of a millisecond to decompress, large enough that compression barely suffers.
CHUNK: Final = 256 * 1024
#: Key suffixes: the seekable form, and the single-frame form written before it.
SEEKABLE_SUFFIX: Final = ".szst"
SINGLE_FRAME_SUFFIX: Final = ".zst"
FOOTER_SIZE: Final = 9

_SKIPPABLE_MAGIC: Final = 0x184D2A5E
_SEEKABLE_MAGIC: Final = 0x8F92EAB1
_footer = struct.Struct("<LBL")
_entry = struct.Struct("<LL")
_frame_header = struct.Struct("<LL")


def is_seekable_key(key: str) -> bool:
    return key.endswith(SEEKABLE_SUFFIX)


class SeekableWriter:
    """Compresses a stream into seekable form: ``feed`` and ``finish`` return bytes to write."""

    def __init__(self, level: int) -> None:
        self._compressor = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True
        )
        self._pending = bytearray()
        self._entries: list[tuple[int, int]] = []

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        out = bytearray()
        while len(self._pending) >= CHUNK:
            out += self._frame(bytes(self._pending[:CHUNK]))
            del self._pending[:CHUNK]
        return bytes(out)

    def finish(self) -> bytes:
        out = bytearray()
        if self._pending or not self._entries:
            out += self._frame(bytes(self._pending))
            self._pending.clear()
        table = b"".join(_entry.pack(c, d) for c, d in self._entries)
        table += _footer.pack(len(self._entries), 0, _SEEKABLE_MAGIC)
        out += _frame_header.pack(_SKIPPABLE_MAGIC, len(table)) + table
        return bytes(out)

    def _frame(self, chunk: bytes) -> bytes:
        frame = self._compressor.compress(chunk)
        self._entries.append((len(frame), len(chunk)))
        return frame


@dataclass(frozen=True)
class SeekTable:
    #: Offsets of each frame in the compressed object and in the original, one past the last
    #: at the end of each list.
    compressed: tuple[int, ...]
    decompressed: tuple[int, ...]

    @property
    def size(self) -> int:
        return self.decompressed[-1]

    def frames_for(self, start: int, length: int) -> tuple[int, int]:
        """The first frame and one past the last that hold bytes [start, start + length)."""
        first = bisect.bisect_right(self.decompressed, start) - 1
        last = bisect.bisect_left(self.decompressed, start + length)
        return max(first, 0), max(last, first + 1)


def table_size(footer: bytes, key: str) -> int:
    """The bytes of the seek table's skippable frame, from the object's last 9 bytes."""
    if len(footer) != FOOTER_SIZE:
        raise StorageError(f"compressed object {key} is truncated (no seek table)")
    frames, descriptor, magic = _footer.unpack(footer)
    if magic != _SEEKABLE_MAGIC or descriptor & 0x7C:
        raise StorageError(f"compressed object {key} has no seek table")
    per_entry = 12 if descriptor & 0x80 else 8
    return 8 + frames * per_entry + FOOTER_SIZE


def parse_table(frame: bytes, key: str) -> SeekTable:
    """The seek table from its whole skippable frame (``table_size`` bytes at the end)."""
    magic, size = _frame_header.unpack_from(frame)
    frames, descriptor, _ = _footer.unpack_from(frame, len(frame) - FOOTER_SIZE)
    per_entry = 12 if descriptor & 0x80 else 8
    if magic != _SKIPPABLE_MAGIC or size != len(frame) - 8 or size != frames * per_entry + 9:
        raise StorageError(f"compressed object {key} has a damaged seek table")
    compressed, decompressed = [0], [0]
    for i in range(frames):
        c, d = _entry.unpack_from(frame, 8 + i * per_entry)
        compressed.append(compressed[-1] + c)
        decompressed.append(decompressed[-1] + d)
    return SeekTable(tuple(compressed), tuple(decompressed))


def decompress_frames(data: bytes, table: SeekTable, first: int, last: int, key: str) -> bytes:
    """Frames ``first`` to ``last`` (exclusive) of the object, from their compressed bytes;
    each checked by its checksum and its size in the table."""
    out = bytearray()
    base = table.compressed[first]
    decompressor = zstandard.ZstdDecompressor()
    for i in range(first, last):
        frame = data[table.compressed[i] - base : table.compressed[i + 1] - base]
        expected = table.decompressed[i + 1] - table.decompressed[i]
        try:
            chunk = decompressor.decompress(frame, max_output_size=expected)
        except zstandard.ZstdError as exc:
            raise StorageError(f"compressed object {key} is corrupt (frame {i}): {exc}") from exc
        if len(chunk) != expected:
            raise StorageError(f"compressed object {key} is corrupt (frame {i} size)")
        out += chunk
    return bytes(out)
