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

    sha256: str
    received_sha256: str


def decide(existing: Existing | None, received_sha256: str) -> Decision:
    if existing is None:
        return Decision.STORE
    # Either digest matches: the stored bytes may be a normalised form of what this source
    # sent, in which case the sender's original bytes are what it resends.
    if received_sha256 in (existing.received_sha256, existing.sha256):
        return Decision.DUPLICATE
    return Decision.CONFLICT
