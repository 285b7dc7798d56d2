"""What to do with an arriving instance given what the catalogue already holds (pure)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Decision(enum.Enum):
    STORE = "store"
    #: Same SOP Instance UID, same bytes: acknowledge, write nothing (PACS resend all the time).
    DUPLICATE = "duplicate"
    #: Same SOP Instance UID, other bytes: refuse (until per-source conflict policies exist).
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Existing:
    """The facts about the stored instance with the arriving SOP Instance UID."""

    #: SHA-256 of the data set (the bytes after the File Meta Information) first received.
    received_sha256: str


def decide(existing: Existing | None, data_set_sha256: str) -> Decision:
    """Dedup by SOP Instance UID and the hash of the data set as received.

    The File Meta Information is left out of the comparison: it describes the file, not the
    instance (PS3.10 7.1), and senders rewrite it (implementation UID and version, group
    length) when they resend.  The data set is compared as received, before any
    normalisation, so a resend matches even when the archive changed what it stored.
    """
    if existing is None:
        return Decision.STORE
    if data_set_sha256 == existing.received_sha256:
        return Decision.DUPLICATE
    return Decision.CONFLICT
