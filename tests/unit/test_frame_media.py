"""Negotiating the media type of frames (PS3.18 8.7.3.5): as stored, under the right name."""

from __future__ import annotations

import pytest

from vna.gateway.media import FrameRendition, negotiate_frames, parse_accept

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"
RLE = "1.2.840.10008.1.2.5"


@pytest.mark.parametrize(
    ("accept", "stored", "frames", "expected"),
    [
        # OHIF's request: octet-stream with transfer-syntax=*, quoted or not.
        (
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
            JLS,
            1,
            FrameRendition("application/octet-stream", JLS, True),
        ),
        (
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
            IMPLICIT,
            3,
            FrameRendition("application/octet-stream", EXPLICIT, True),
        ),
        # Native frames need no syntax named; they are Explicit VR Little Endian bytes.
        (
            'multipart/related; type="application/octet-stream"',
            IMPLICIT,
            2,
            FrameRendition("application/octet-stream", EXPLICIT, True),
        ),
        (
            "multipart/related; type=image/jls",
            JLS,
            2,
            FrameRendition("image/jls", JLS, True),
        ),
        (
            f'multipart/related; type="image/jp2"; transfer-syntax={J2K}',
            J2K,
            1,
            FrameRendition("image/jp2", J2K, True),
        ),
        # Quality values: the best acceptable wins, q=0 never.
        (
            "multipart/related; type=image/jp2; q=0.2, "
            "multipart/related; type=image/jls; q=0.9, image/jls; q=0",
            JLS,
            1,
            FrameRendition("image/jls", JLS, True),
        ),
        # A single part where the request asks for one.
        ("image/jls", JLS, 1, FrameRendition("image/jls", JLS, False)),
        (
            "application/octet-stream",
            EXPLICIT,
            1,
            FrameRendition("application/octet-stream", EXPLICIT, False),
        ),
        ("*/*", J2K, 2, FrameRendition("image/jp2", J2K, True)),
        (None, EXPLICIT, 1, FrameRendition("application/octet-stream", EXPLICIT, True)),
    ],
)
def test_acceptable_renditions(
    accept: str | None, stored: str, frames: int, expected: FrameRendition
) -> None:
    assert negotiate_frames(parse_accept(accept), stored, frames) == expected


@pytest.mark.parametrize(
    ("accept", "stored", "expected"),
    [
        # Compressed frames decoded: octet-stream means Explicit VR Little Endian bytes.
        (
            'multipart/related; type="application/octet-stream"',
            JLS,
            FrameRendition("application/octet-stream", EXPLICIT, True, EXPLICIT),
        ),
        # Encoded in another syntax, by its media type or by the syntax named.
        (
            f"multipart/related; type=image/jls; transfer-syntax={JLS}",
            J2K,
            FrameRendition("image/jls", JLS, True, JLS),
        ),
        (
            "multipart/related; type=image/jp2",
            EXPLICIT,
            FrameRendition("image/jp2", J2K, True, J2K),
        ),
        (
            f"multipart/related; type=image/jphc; transfer-syntax={HTJ2K_RPCL}",
            EXPLICIT,
            FrameRendition("image/jphc", HTJ2K_RPCL, True, HTJ2K_RPCL),
        ),
        (
            "multipart/related; type=image/dicom-rle",
            IMPLICIT,
            FrameRendition("image/dicom-rle", RLE, True, RLE),
        ),
        # The cheapest acceptable: the stored frames first, whatever the quality values.
        (
            "multipart/related; type=image/jp2; q=1, multipart/related; type=image/jls; q=0.5",
            JLS,
            FrameRendition("image/jls", JLS, True),
        ),
        # Decoding before encoding: octet-stream is cheaper than JPEG 2000 from JPEG-LS.
        (
            "multipart/related; type=image/jp2, multipart/related; type=application/octet-stream",
            JLS,
            FrameRendition("application/octet-stream", EXPLICIT, True, EXPLICIT),
        ),
    ],
)
def test_transcoded_renditions(accept: str, stored: str, expected: FrameRendition) -> None:
    assert negotiate_frames(parse_accept(accept), stored, 1) == expected


def test_lossy_frames_only_when_allowed() -> None:
    accept = parse_accept(
        "multipart/related; type=image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91"
    )
    assert isinstance(negotiate_frames(accept, EXPLICIT, 1), str)
    allowed = negotiate_frames(accept, EXPLICIT, 1, allow_lossy=True)
    assert allowed == FrameRendition(
        "image/jp2", "1.2.840.10008.1.2.4.91", True, "1.2.840.10008.1.2.4.91"
    )


@pytest.mark.parametrize(
    ("accept", "stored", "frames", "reason"),
    [
        # Lossy from lossless: only with [transcoding] allow_lossy.
        (
            "multipart/related; type=image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91",
            J2K,
            1,
            "allow_lossy is off",
        ),
        # A syntax the archive has no encoder for.
        ("multipart/related; type=image/jpeg", EXPLICIT, 1, "no encoder for the lossy"),
        # A media type that is not the syntax's.
        (f"multipart/related; type=image/jp2; transfer-syntax={JLS}", J2K, 1, "not image/jp2"),
        ("image/jls", JLS, 2, "single-part"),
        ("application/dicom", EXPLICIT, 1, "not application/dicom"),
    ],
)
def test_unacceptable_renditions_name_the_reason(
    accept: str, stored: str, frames: int, reason: str
) -> None:
    answer = negotiate_frames(parse_accept(accept), stored, frames)
    assert isinstance(answer, str) and reason in answer
