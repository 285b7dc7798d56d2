"""The streaming multipart/related reader: any chunking gives the same parts; malformed bodies
give MultipartError (a 400), never another exception or a hang."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vna.gateway.multipart import MultipartError, MultipartReader


class Chunked:
    """A byte stream that hands out the body in the given chunk sizes."""

    def __init__(self, body: bytes, sizes: list[int]) -> None:
        self.body = body
        self.sizes = sizes or [1 << 20]
        self.pos = 0
        self.i = 0

    async def read(self, n: int = -1) -> bytes:
        size = min(n, self.sizes[self.i % len(self.sizes)])
        self.i += 1
        out = self.body[self.pos : self.pos + size]
        self.pos += len(out)
        return out


def build(parts: list[tuple[dict[str, str], bytes]], boundary: str, preamble: bytes = b"") -> bytes:
    out = [preamble + (b"\r\n" if preamble else b"")]
    for headers, body in parts:
        out.append(f"--{boundary}\r\n".encode())
        for k, v in headers.items():
            out.append(f"{k}: {v}\r\n".encode())
        out.append(b"\r\n" + body + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


async def read_all(stream, boundary: str, read_size: int = 1 << 20):
    reader = MultipartReader(stream, boundary, read_size=read_size)
    parts = []
    while (headers := await reader.next_part()) is not None:
        chunks: list[bytes] = []
        size = await reader.read_body(chunks.append)
        assert size == sum(map(len, chunks))
        parts.append((headers, b"".join(chunks)))
    return parts


async def test_parts_and_headers_come_back_exactly():
    parts = [
        ({"Content-Type": "application/dicom"}, b"\x00" * 10 + b"\r\n--not-the-boundary" + b"x"),
        ({"Content-Type": "application/dicom", "Content-Location": "a"}, b""),
        ({}, b"\r\n\r\n"),
    ]
    body = build(parts, "bnd", preamble=b"this is a preamble")
    got = await read_all(Chunked(body, [7]), "bnd")
    assert [b for _, b in got] == [b for _, b in parts]
    assert got[1][0] == {"content-type": "application/dicom", "content-location": "a"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no multipart boundary"),
        (b"--bnd\r\nContent-Type: x\r\n", "ends inside part headers"),
        (b"--bnd\r\n\r\npayload without end", "no closing boundary"),
        (b"--bnd\r\nno colon here\r\n\r\nx\r\n--bnd--", "malformed part header"),
        (b"--bndgarbage\r\n\r\nx\r\n--bnd--", "unexpected bytes"),
        (b"--bnd\r\n" + b"X-A: " + b"a" * 20000 + b"\r\n\r\nx\r\n--bnd--", "exceed"),
    ],
)
async def test_malformed_bodies_are_named(body, message):
    with pytest.raises(MultipartError, match=message):
        await read_all(Chunked(body, [5]), "bnd")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    sizes=st.lists(st.integers(1, 64), min_size=1, max_size=8),
    read_size=st.integers(1, 128),
)
def test_any_chunking_yields_the_same_parts(bodies, sizes, read_size):
    boundary = "b0undary-1234"
    body = build([({"Content-Type": "application/dicom"}, b) for b in bodies], boundary)
    got = asyncio.run(read_all(Chunked(body, sizes), boundary, read_size=read_size))
    assert [b for _, b in got] == bodies


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=400), sizes=st.lists(st.integers(1, 50), min_size=1, max_size=4))
def test_arbitrary_bytes_parse_or_fail_cleanly(body, sizes):
    try:
        asyncio.run(asyncio.wait_for(read_all(Chunked(body, sizes), "bnd"), timeout=5))
    except MultipartError:
        pass


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 200), noise=st.binary(max_size=20))
def test_truncated_or_corrupted_bodies_fail_cleanly(cut, noise):
    body = build([({"Content-Type": "application/dicom"}, b"A" * 50)] * 2, "bnd")
    mutated = body[:cut] + noise + body[cut + len(noise) :]
    try:
        asyncio.run(asyncio.wait_for(read_all(Chunked(mutated, [13]), "bnd"), timeout=5))
    except MultipartError:
        pass
