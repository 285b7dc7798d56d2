"""A streaming multipart/related reader (RFC 2046 5.1, RFC 2387) for STOW-RS bodies.

aiohttp's own reader scans for the boundary in Python a few kilobytes at a time; STOW-RS
bodies are gigabytes of instance data, so this reader takes large reads from the socket and
looks for the delimiter with ``bytes.find`` (C speed), handing each part's bytes to the caller
as they arrive.  Memory stays bounded by the read size whatever the part size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from vna.errors import InvalidRequest

MAX_HEADER_BYTES = 16 * 1024


class ByteStream(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class MultipartError(InvalidRequest):
    """The body is not well-formed multipart (the message says where)."""


class MultipartReader:
    def __init__(self, stream: ByteStream, boundary: str, read_size: int = 1 << 20) -> None:
        if not boundary or len(boundary) > 200:
            raise MultipartError("multipart boundary is missing or longer than 200 characters")
        self._stream = stream
        self._read_size = read_size
        self._dash_boundary = b"--" + boundary.encode("latin-1")
        self._delimiter = b"\r\n" + self._dash_boundary
        self._buf = bytearray()
        self._eof = False
        self._started = False
        self._finished = False
        self._in_body = False

    async def _fill(self) -> bool:
        """Read more into the buffer; False at end of stream."""
        if self._eof:
            return False
        data = await self._stream.read(self._read_size)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def next_part(self) -> dict[str, str] | None:
        """Advance to the next part and return its headers (names lower-cased); None after
        the close delimiter.  The previous part's body must have been read."""
        if self._finished:
            return None
        if self._in_body:
            raise RuntimeError("the previous part's body was not read")
        if not self._started:
            await self._skip_preamble()
            self._started = True
        # After a delimiter: "--" closes the body; otherwise transport padding, then CRLF.
        while len(self._buf) < 2:
            if not await self._fill():
                raise MultipartError("multipart body ends right after a boundary")
        if self._buf[:2] == b"--":
            self._finished = True
            return None
        while True:
            eol = self._buf.find(b"\r\n")
            if eol >= 0:
                if self._buf[:eol].strip(b" \t"):
                    raise MultipartError("unexpected bytes after a multipart boundary")
                del self._buf[: eol + 2]
                break
            if len(self._buf) > 1024 or not await self._fill():
                raise MultipartError("multipart boundary line is not terminated")
        headers = await self._read_headers()
        self._in_body = True
        return headers

    async def _skip_preamble(self) -> None:
        # The first delimiter may start the body (no CRLF before it) or follow a preamble.
        while True:
            if self._buf.startswith(self._dash_boundary):
                del self._buf[: len(self._dash_boundary)]
                return
            at = self._buf.find(self._delimiter)
            if at >= 0:
                del self._buf[: at + len(self._delimiter)]
                return
            keep = len(self._delimiter)
            if len(self._buf) > keep:
                del self._buf[: len(self._buf) - keep]
            if not await self._fill():
                raise MultipartError("no multipart boundary found in the body")

    async def _read_headers(self) -> dict[str, str]:
        while True:
            if self._buf.startswith(b"\r\n"):
                del self._buf[:2]
                return {}
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buf) > MAX_HEADER_BYTES:
                raise MultipartError(f"part headers exceed {MAX_HEADER_BYTES} bytes")
            if not await self._fill():
                raise MultipartError("multipart body ends inside part headers")
        raw = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        headers: dict[str, str] = {}
        for line in raw.split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise MultipartError(f"malformed part header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        return headers

    async def read_body(self, sink: Callable[[bytes], Awaitable[None] | None]) -> int:
        """Pass the current part's bytes to ``sink`` as they arrive; return the part size."""
        if not self._in_body:
            raise RuntimeError("no part is open")
        size = 0
        keep = len(self._delimiter) - 1
        while True:
            # After a flush the buffer holds at most ``keep`` old bytes, so each byte is
            # scanned about once.
            at = self._buf.find(self._delimiter)
            if at >= 0:
                if at:
                    size += at
                    await _call(sink, self._take(at))
                del self._buf[: len(self._delimiter)]
                self._in_body = False
                return size
            # Everything but a possible partial delimiter at the end can go out now.
            flush = len(self._buf) - keep
            if flush > 0:
                size += flush
                await _call(sink, self._take(flush))
            if not await self._fill():
                raise MultipartError("multipart body ends inside a part (no closing boundary)")

    def _take(self, n: int) -> bytes:
        """The first ``n`` bytes of the buffer, removed from it, copied once."""
        with memoryview(self._buf) as view:
            chunk = bytes(view[:n])
        del self._buf[:n]
        return chunk

    async def discard_body(self) -> int:
        return await self.read_body(_ignore)


async def _call(sink: Callable[[bytes], Awaitable[None] | None], data: bytes) -> None:
    result = sink(data)
    if result is not None:
        await result


def _ignore(_data: bytes) -> None:
    return None
