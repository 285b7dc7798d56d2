"""What to do with an arriving instance given what the catalogue already holds (pure)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Decision(enum.Enum):
    STORE = "store"
    #: Same SOP Instance UID, a version the archive knows: acknowledge, write nothing (PACS
    #: resend all the time).
    DUPLICATE = "duplicate"
    #: Same SOP Instance UID, other content, source policy "reject": refuse.
    CONFLICT = "conflict"
    #: Same SOP Instance UID, other content, source policy "replace": the new version becomes
    #: current; the old one is kept as an earlier version.
    REPLACE = "replace"
    #: Same SOP Instance UID, other content, source policy "keep-both": store the new version
    #: in quarantine, visible to administrators only.
    QUARANTINE = "quarantine"


#: Source conflict policy (``on_conflict``) -> decision for other content.
_ON_CONFLICT = {
    "reject": Decision.CONFLICT,
    "replace": Decision.REPLACE,
    "keep-both": Decision.QUARANTINE,
}


@dataclass(frozen=True)
class Existing:
    """The facts about the stored instance with the arriving SOP Instance UID."""

    #: SHA-256 of the data set (the bytes after the File Meta Information) first received.
    received_sha256: str
    #: SHA-256 of the data set the archive stored (differs when it normalised the instance).
    stored_sha256: str | None = None
    #: Data-set hashes (received and stored) of earlier versions and quarantined conflicts.
    other_versions: frozenset[str] = frozenset()


def decide(existing: Existing | None, data_set_sha256: str, policy: str = "reject") -> Decision:
    """Dedup by SOP Instance UID and the hash of the data set as received.

    The File Meta Information is left out of the comparison: it describes the file, not the
    instance (PS3.10 7.1), and senders rewrite it (implementation UID and version, group
    length) when they resend.  The data set is compared as received, before any
    normalisation, so a resend matches even when the archive changed what it stored; the
    stored version (sent back by a replica or another archive) and every version the archive
    already holds (earlier, quarantined) match too, so a stale resend never replaces the
    current version nor opens a second conflict.  Anything else is a conflict, handled by the
    source's ``policy``.
    """
    if existing is None:
        return Decision.STORE
    if data_set_sha256 in (existing.received_sha256, existing.stored_sha256):
        return Decision.DUPLICATE
    if data_set_sha256 in existing.other_versions:
        return Decision.DUPLICATE
    try:
        return _ON_CONFLICT[policy]
    except KeyError:
        raise ValueError(f"unknown conflict policy {policy!r}") from None
