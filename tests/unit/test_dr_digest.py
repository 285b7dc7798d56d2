"""What reading an object back proves (``vna.recovery.sites.ObjectReader``): stored and decoded
digests of plain and zstandard-compressed objects, and damaged frames told apart."""

from __future__ import annotations

import hashlib

import pytest
import zstandard

from vna.recovery.policy import Outcome
from vna.recovery.sites import Expected, ObjectReader

CONTENT = bytes(range(256)) * 400
FRAME = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(CONTENT)


def read(data: bytes, compression: str, chunk: int = 1000) -> Outcome:
    reader = ObjectReader(compression)
    for start in range(0, len(data), chunk):
        reader.feed(data[start : start + chunk])
    digest = reader.digest()
    assert digest.stored_sha256 == hashlib.sha256(data).hexdigest()
    expected = Expected("k", compression, hashlib.sha256(CONTENT).hexdigest(), len(CONTENT))
    return digest.judge(expected)


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
@pytest.mark.parametrize(
    ("data", "compression", "outcome"),
    [
        (CONTENT, "none", Outcome.VERIFIED),
        (CONTENT[:-1], "none", Outcome.CORRUPT),
        (CONTENT[:-1] + b"x", "none", Outcome.CORRUPT),
        (FRAME, "zstd", Outcome.VERIFIED),
        (FRAME[:-5], "zstd", Outcome.CORRUPT),  # truncated frame
        (FRAME + b"garbage", "zstd", Outcome.CORRUPT),  # not the object written
        (FRAME[:20] + bytes(len(FRAME) - 20), "zstd", Outcome.CORRUPT),
    ],
)
def test_reader(data: bytes, compression: str, outcome: Outcome, chunk: int) -> None:
    assert read(data, compression, chunk) is outcome
