"""Pure decisions of disaster recovery: no I/O, tested with tables.

* which stores receive a copy of every object, and which a failed read tries next;
* what one read of an object proves (verified, missing, corrupt, unreadable), and whether a
  failed read on a replica is a defect of the replica or data not replicated yet (the RPO);
* which of several objects carrying one SOP Instance UID a catalogue rebuild makes current.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass

#: The store at ``storage_url``; replicas have the names given in ``[[replicas]]``.
PRIMARY = "primary"


def replication_targets(active: str, replicas: Sequence[str]) -> tuple[str, ...]:
    """The stores that receive a verified copy of every object: the declared replicas except
    the active one.

    While failed over, the primary is not a target: it may be lost, and it is resynchronised
    by ``vna dr failback`` (which copies what it lacks, verified) before it serves again.
    """
    return tuple(name for name in replicas if name != active)


def read_order(active: str, replicas: Sequence[str]) -> tuple[str, ...]:
    """The stores a read tries, in order, after the active store failed: the replicas as
    declared, then the primary (when failed over, it may be back and hold the object)."""
    others = [name for name in replicas if name != active]
    if active != PRIMARY:
        others.append(PRIMARY)
    return tuple(others)


class Outcome(enum.StrEnum):
    """What reading one object back proved."""

    VERIFIED = "verified"
    MISSING = "missing"
    #: Present, but not the catalogued bytes (other digest or size, or a compressed form that
    #: does not decompress).
    CORRUPT = "corrupt"
    #: The store failed to serve it (an error other than "not there").
    UNREADABLE = "unreadable"


def judge_read(
    expected_sha256: str,
    expected_size: int,
    *,
    found: bool,
    readable: bool = True,
    decodable: bool = True,
    sha256: str | None = None,
    size: int | None = None,
) -> Outcome:
    """Compare what was read with the catalogue (SHA-256 and size of the instance's bytes, as
    received: a compressed object is judged by what it decompresses to)."""
    if not found:
        return Outcome.MISSING
    if not readable:
        return Outcome.UNREADABLE
    if not decodable or sha256 != expected_sha256 or size != expected_size:
        return Outcome.CORRUPT
    return Outcome.VERIFIED


class Finding(enum.StrEnum):
    """A drill's verdict on one instance read from the replica."""

    OK = "ok"
    #: The replica should hold it (a verified copy is recorded, or it is old enough) and does
    #: not serve it bit-exact.
    DEFECT = "defect"
    #: Not on the replica because it was not replicated yet: what a real loss of the primary
    #: would lose now (counted in the RPO), not a defect of the replica.
    NOT_YET_REPLICATED = "not yet replicated"


def expected_on_replica(
    recorded: bool,
    received_at: dt.datetime,
    now: dt.datetime,
    grace_seconds: float | None = None,
) -> bool:
    """Whether the replica ought to hold an instance.

    With replication by the archive the catalogue records each verified copy (``recorded``).
    With replication outside the archive (S3 cross-region replication of the bucket) nothing
    is recorded: an instance older than ``grace_seconds`` (the replication SLA) is expected.
    """
    if recorded:
        return True
    if grace_seconds is None:
        return False
    return (now - received_at).total_seconds() > grace_seconds


def drill_finding(outcome: Outcome, expected: bool) -> Finding:
    if outcome is Outcome.VERIFIED:
        return Finding.OK
    if outcome is Outcome.MISSING and not expected:
        return Finding.NOT_YET_REPLICATED
    # Corrupt bytes are a defect even where no copy was expected yet: the replica would
    # serve them.
    return Finding.DEFECT


def recovery_point_seconds(oldest_unreplicated: dt.datetime | None, now: dt.datetime) -> float:
    """The RPO as it stands: the age of the oldest instance not yet on the replica (what a
    loss of the primary right now would take back to); 0 when everything is replicated."""
    if oldest_unreplicated is None:
        return 0.0
    return max((now - oldest_unreplicated).total_seconds(), 0.0)


def drill_passed(defects: int, rpo_seconds: float, max_rpo_seconds: float | None) -> bool:
    """A drill passes with no replica defect and, when a target is given, an RPO within it."""
    if defects:
        return False
    return max_rpo_seconds is None or rpo_seconds <= max_rpo_seconds


# --- catalogue rebuild ----------------------------------------------------------------------


@dataclass(frozen=True)
class FoundObject:
    """An object of the store, as far as a rebuild can tell what it holds."""

    object_key: str
    #: Of the instance's bytes (decompressed).
    sha256: str
    compressed: bool
    #: When this version came to be: the archive's ``vna-ingested-at`` metadata or the latest
    #: modification recorded in the Original Attributes Sequence, whichever is later.
    version_time: dt.datetime | None


class Choice(enum.StrEnum):
    #: Same content as the instance already filed, in an encoding that is not preferred: the
    #: object is a duplicate (an original awaiting deletion after compression).
    KEEP = "keep"
    #: Same content, compressed: the instance is switched to it (it is the form the lost
    #: catalogue pointed to; the uncompressed original was awaiting deletion).
    SWITCH_ENCODING = "switch-encoding"
    #: Other content, newer: it becomes the current version, the filed one an earlier version.
    NEWER = "newer"
    #: Other content, older: filed as an earlier version.
    OLDER = "older"


def choose_version(current: FoundObject, found: FoundObject) -> Choice:
    """Which of two objects of one SOP Instance UID the rebuilt catalogue serves.

    Deterministic whatever order the store lists them in: the later version time wins, an
    unknown time loses to a known one, and equal times are broken by digest.
    """
    if found.sha256 == current.sha256:
        if found.compressed and not current.compressed:
            return Choice.SWITCH_ENCODING
        return Choice.KEEP
    if _version_rank(found) > _version_rank(current):
        return Choice.NEWER
    return Choice.OLDER


def _version_rank(o: FoundObject) -> tuple[bool, dt.datetime, str]:
    when = o.version_time or dt.datetime.min.replace(tzinfo=dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (o.version_time is not None, when, o.sha256)
