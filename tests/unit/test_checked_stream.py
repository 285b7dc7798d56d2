"""The retriever's checks of what it streams (vna.retrieve): a copy that is not the catalogued
content is never delivered whole, and damage within the read-ahead shows before the first
byte."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from vna.errors import DamagedObject
from vna.retrieve import StoredInstance, _checked, _read_ahead

GOOD = [bytes([i]) * 1000 for i in range(5)]


def instance(chunks: list[bytes]) -> StoredInstance:
    data = b"".join(chunks)
    return StoredInstance(
        sop_uid="1.2.3",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        study_uid="1.2",
        series_uid="1.2.3.4",
        object_key="sha256/x",
        compression="none",
        tier="hot",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def delivered(
    chunks: list[bytes], expected: StoredInstance
) -> tuple[bytes, Exception | None]:
    out = b""
    try:
        async for chunk in _checked(stream(chunks), expected, "primary"):
            out += chunk
    except DamagedObject as exc:
        return out, exc
    return out, None


@pytest.mark.parametrize(
    ("what", "chunks"),
    [
        ("flipped in the last chunk", [*GOOD[:4], b"\x05" * 999 + b"\x06"]),
        ("flipped in the first chunk", [b"\x01" + GOOD[0][1:], *GOOD[1:]]),
        ("cut short", GOOD[:4]),
        ("longer", [*GOOD, b"more"]),
    ],
)
def test_a_damaged_copy_is_never_delivered_whole(what: str, chunks: list[bytes]) -> None:
    expected = instance(GOOD)
    out, error = asyncio.run(delivered(chunks, expected))
    assert isinstance(error, DamagedObject), what
    assert len(out) < expected.size  # the last chunk held back: a read cut short
    assert "not the catalogued content" in str(error)


def test_the_catalogued_content_is_delivered_whole() -> None:
    out, error = asyncio.run(delivered(GOOD, instance(GOOD)))
    assert error is None and out == b"".join(GOOD)


def test_damage_within_the_read_ahead_is_raised_before_the_first_byte() -> None:
    expected = instance(GOOD)
    damaged = [*GOOD[:4], b"\x05" * 999 + b"\x06"]

    async def run(limit: int) -> tuple[str, int]:
        try:
            opened = await _read_ahead(_checked(stream(damaged), expected, "primary"), limit)
        except DamagedObject:
            return "opening", 0
        got = 0
        try:
            async for chunk in opened:
                got += len(chunk)
        except DamagedObject:
            return "streaming", got
        return "delivered", got

    # All of it read ahead: raised by the opening, before a gateway sends anything.
    assert asyncio.run(run(1 << 20)) == ("opening", 0)
    # Beyond the read-ahead: raised while streaming, the last chunk never delivered.
    assert asyncio.run(run(2000)) == ("streaming", 4000)
