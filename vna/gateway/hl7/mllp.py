"""MLLP framing (HL7 v2.5.1 Appendix C, Minimal Lower Layer Protocol release 2): each message
travels as a block ``<VT> message <FS><CR>`` (0x0B ... 0x1C 0x0D) on a TCP connection, and the
answer comes back the same way on the same connection.

The reader keeps its own buffer so that what a sender has pipelined after one block stays for
the next, and so that an oversized block can be skipped to its end without holding it: the
sender is answered (AR) and the connection stays usable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
#: How much of an oversized block is kept: enough for MSH, to address the ACK.
HEAD_BYTES = 4096
_CHUNK = 1 << 16
#: Between blocks, line ends and spaces some senders add are ignored.
_BETWEEN_BLOCKS = b"\r\n\t "


class FramingError(Exception):
    """The connection does not carry MLLP blocks (data outside a block, or cut off inside
    one): it is closed, since the next block's start can no longer be found reliably."""


@dataclass(frozen=True)
class Block:
    """One received block: its content, or for a block larger than the limit only its
    beginning (``too_large``)."""

    content: bytes
    too_large: bool = False


def wrap(message: bytes) -> bytes:
    return START_BLOCK + message + END_BLOCK


class BlockReader:
    """Blocks from a stream, each at most ``max_bytes``; a read waits at most ``timeout``
    seconds for more data (TimeoutError)."""

    def __init__(self, reader: asyncio.StreamReader, *, max_bytes: int, timeout: float) -> None:
        self._reader = reader
        self._max = max_bytes
        self._timeout = timeout
        self._buf = bytearray()

    async def _fill(self) -> bool:
        chunk = await asyncio.wait_for(self._reader.read(_CHUNK), self._timeout)
        if not chunk:
            return False
        self._buf += chunk
        return True

    async def next_block(self) -> Block | None:
        """The next block; None when the peer closed the connection between blocks."""
        while True:
            kept = self._buf.lstrip(_BETWEEN_BLOCKS)
            if len(kept) != len(self._buf):
                del self._buf[: len(self._buf) - len(kept)]
            if self._buf:
                break
            if not await self._fill():
                return None
        if self._buf[:1] != START_BLOCK:
            raise FramingError("data outside an MLLP block (no start byte 0x0B)")
        search_from = 1
        head: bytes | None = None
        while True:
            end = self._buf.find(END_BLOCK, search_from)
            if end >= 0:
                if head is None and end - 1 > self._max:
                    head = bytes(self._buf[1 : 1 + HEAD_BYTES])
                if head is not None:
                    del self._buf[: end + len(END_BLOCK)]
                    return Block(head, too_large=True)
                content = bytes(self._buf[1:end])
                del self._buf[: end + len(END_BLOCK)]
                return Block(content)
            if head is None and len(self._buf) - 1 > self._max:
                head = bytes(self._buf[1 : 1 + HEAD_BYTES])
            if head is not None:
                # Skipping: keep only the last byte, which may be the first of END_BLOCK.
                del self._buf[:-1]
                search_from = 0
            else:
                search_from = max(1, len(self._buf) - 1)
            if not await self._fill():
                raise FramingError("connection closed inside an MLLP block (truncated message)")
