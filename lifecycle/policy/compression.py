"""Compression: whether an instance's stored object is worth compressing, and worth keeping.

Only uncompressed transfer syntaxes are candidates: pixel data in JPEG, JPEG 2000, RLE or
Deflate is already compressed and zstandard would spend CPU to save nothing.  The archive
never transcodes: the object is compressed as a whole (zstandard frame) and a retrieve returns
the very bytes received.
"""

from __future__ import annotations

from dataclasses import dataclass

from vna.config import CompressionSettings

#: Native (uncompressed) transfer syntaxes, PS3.5 10 and A.4.11.
UNCOMPRESSED_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still received)
        "1.2.840.10008.1.2.1.98",  # Encapsulated Uncompressed Explicit VR Little Endian
    }
)


@dataclass(frozen=True)
class CompressionDecision:
    compress: bool
    #: Why not, for the job log; empty when compressing.
    reason: str = ""


def plan(
    transfer_syntax: str, size: int, compression: str, tier: str, settings: CompressionSettings
) -> CompressionDecision:
    """Whether to compress an instance stored as (transfer syntax, size, compression, tier)."""
    if settings.level == 0:
        return CompressionDecision(False, "compression is off (compression.level = 0)")
    if compression != "none":
        return CompressionDecision(False, f"already stored as {compression}")
    if tier != "hot":
        # Compression runs right after ingest; an object already moved to a colder tier is
        # left alone (rewriting it there would cost a restore or an early-deletion fee).
        return CompressionDecision(False, f"in the {tier} tier")
    if transfer_syntax not in UNCOMPRESSED_TRANSFER_SYNTAXES:
        return CompressionDecision(False, f"transfer syntax {transfer_syntax} is compressed")
    if size < settings.min_size:
        return CompressionDecision(False, f"{size} bytes is below compression.min_size")
    return CompressionDecision(True)


def worth_keeping(original_size: int, compressed_size: int, min_saving_percent: int) -> bool:
    """Whether the compressed object saves at least ``min_saving_percent`` of the bytes."""
    return compressed_size * 100 <= original_size * (100 - min_saving_percent) and (
        compressed_size < original_size
    )
