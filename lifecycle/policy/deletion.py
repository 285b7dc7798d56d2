"""Whether an approved retention deletion may go ahead now: the guards of a study's deletion.

A deletion cannot be undone, so every guard refuses when in doubt, and the first reason found
is the one recorded.  The approval re-checks at the moment of deletion what the review saw:

1. the study is still in the archive;
2. no active legal hold covers it (on the study, its patient, or a patient linked to them);
3. its retention rule is the one reviewed, and gives the same retain-until date;
4. it is due today (approved ahead of its date: left pending, deleted on the day after);
5. its contents are the ones reviewed (no instance added or replaced since);
6. no object of it is protected by S3 Object Lock (a retention period or a legal hold set on
   the object in the bucket) on any store: the bucket would refuse, or keep the bytes under a
   delete marker, so the catalogue must not forget the study; and every store could be asked
   (a store that does not answer cannot say that nothing of the study is locked on it).

Pure: facts in, verdict out; ``lifecycle.retention`` loads the facts and applies the verdict.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from lifecycle.policy.retention import RetentionDecision, is_due


class Verdict(enum.Enum):
    DELETE = "delete"
    #: Approved ahead of its date: deleted when it comes.
    PENDING = "pending"
    #: Left alone, with the reason recorded.
    SKIP = "skip"


@dataclass(frozen=True)
class Reviewed:
    """What the review recorded of the study."""

    rule: str
    rule_fingerprint: str
    retain_until: dt.date | None
    instances: int
    max_instance_id: int


@dataclass(frozen=True)
class Hold:
    id: int
    scope: str
    reason: str


@dataclass(frozen=True)
class ObjectLock:
    """An object of the study the store protects (S3 Object Lock)."""

    store: str
    object_key: str
    #: Retention period end; None with a legal hold on the object (no end date).
    until: dt.datetime | None


@dataclass(frozen=True)
class StudyNow:
    """The study as it is at the moment of deletion."""

    #: False when the study is no longer in the archive (the other facts are then ignored).
    exists: bool
    holds: Sequence[Hold] = ()
    #: The retention computed now under the current rules.
    decision: RetentionDecision | None = None
    instances: int = 0
    max_instance_id: int = 0
    locks: Sequence[ObjectLock] = ()
    #: Stores that could not be asked about Object Lock (unreachable).
    unchecked_stores: Sequence[str] = ()


@dataclass(frozen=True)
class DeletionCheck:
    verdict: Verdict
    #: One line for the review's outcome column (empty for a deletion).
    reason: str = ""


def check_deletion(reviewed: Reviewed, now: StudyNow, today: dt.date) -> DeletionCheck:
    """The verdict on deleting a reviewed and approved study on ``today``."""
    if not now.exists:
        return DeletionCheck(Verdict.SKIP, "no longer in the archive")
    if now.holds:
        reasons = "; ".join(f"hold {h.id} on the {h.scope}: {h.reason}" for h in now.holds)
        return DeletionCheck(Verdict.SKIP, f"on legal hold ({reasons})")
    decision = now.decision
    if decision is None or (decision.rule, decision.rule_fingerprint) != (
        reviewed.rule,
        reviewed.rule_fingerprint,
    ):
        now_rule = (decision.rule if decision else "") or "no rule"
        return DeletionCheck(
            Verdict.SKIP,
            f"retention rule changed since the review (reviewed: {reviewed.rule}, now: {now_rule})",
        )
    if decision.retain_until != reviewed.retain_until:
        return DeletionCheck(
            Verdict.SKIP,
            f"retain-until changed since the review ({reviewed.retain_until} ->"
            f" {decision.retain_until or 'indefinitely'})",
        )
    if not is_due(decision.retain_until, today):
        return DeletionCheck(
            Verdict.PENDING, f"approved; to be deleted after {decision.retain_until}"
        )
    if (now.instances, now.max_instance_id) != (reviewed.instances, reviewed.max_instance_id):
        return DeletionCheck(
            Verdict.SKIP,
            f"contents changed since the review ({reviewed.instances} instances reviewed,"
            f" {now.instances} now)",
        )
    if now.unchecked_stores:
        names = ", ".join(now.unchecked_stores)
        return DeletionCheck(
            Verdict.SKIP, f"store {names} did not answer: S3 Object Lock could not be checked"
        )
    if now.locks:
        first = now.locks[0]
        until = f"until {first.until.date()}" if first.until else "by a legal hold on the object"
        more = f" and {len(now.locks) - 1} more" if len(now.locks) > 1 else ""
        return DeletionCheck(
            Verdict.SKIP,
            f"under S3 Object Lock on {first.store} ({first.object_key} locked {until}{more})",
        )
    return DeletionCheck(Verdict.DELETE)
