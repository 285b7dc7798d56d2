"""The guards of an approved retention deletion (lifecycle.policy.deletion), as a table: each
row a study as reviewed, the study as it is at deletion time, and the verdict a records
manager would read in the review's outcome column."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from lifecycle.policy.deletion import (
    DeletionCheck,
    Hold,
    ObjectLock,
    Reviewed,
    StudyNow,
    Verdict,
    check_deletion,
)
from lifecycle.policy.retention import RetentionDecision

TODAY = dt.date(2026, 6, 1)
UNTIL = dt.date(2026, 5, 1)
DECISION = RetentionDecision("adult", "f1", UNTIL, "10 years after the study date")
REVIEWED = Reviewed("adult", "f1", UNTIL, instances=3, max_instance_id=42)
AS_REVIEWED = StudyNow(exists=True, decision=DECISION, instances=3, max_instance_id=42)
HOLD = Hold(7, "patient", "litigation 2026/14")
LOCK = ObjectLock("primary", "sha256/ab/cd/abcd", dt.datetime(2030, 1, 1, tzinfo=dt.UTC))


def _now(**changes: Any) -> StudyNow:
    return dataclasses.replace(AS_REVIEWED, **changes)


@pytest.mark.parametrize(
    ("case", "now", "today", "expected"),
    [
        ("as reviewed and due", AS_REVIEWED, TODAY, DeletionCheck(Verdict.DELETE)),
        (
            "gone meanwhile",
            StudyNow(exists=False),
            TODAY,
            DeletionCheck(Verdict.SKIP, "no longer in the archive"),
        ),
        (
            "legal hold set since the review",
            _now(holds=[HOLD]),
            TODAY,
            DeletionCheck(
                Verdict.SKIP, "on legal hold (hold 7 on the patient: litigation 2026/14)"
            ),
        ),
        (
            "hold wins over everything else wrong",
            _now(holds=[HOLD], decision=None, instances=9, locks=[LOCK]),
            TODAY,
            DeletionCheck(
                Verdict.SKIP, "on legal hold (hold 7 on the patient: litigation 2026/14)"
            ),
        ),
        (
            "rule changed",
            _now(decision=RetentionDecision("mammo", "f2", UNTIL, "")),
            TODAY,
            DeletionCheck(
                Verdict.SKIP,
                "retention rule changed since the review (reviewed: adult, now: mammo)",
            ),
        ),
        (
            "no rule applies any more",
            _now(decision=RetentionDecision("", "", None, "kept indefinitely")),
            TODAY,
            DeletionCheck(
                Verdict.SKIP,
                "retention rule changed since the review (reviewed: adult, now: no rule)",
            ),
        ),
        (
            "same rule, edited (fingerprint differs)",
            _now(decision=RetentionDecision("adult", "f9", UNTIL, "")),
            TODAY,
            DeletionCheck(
                Verdict.SKIP,
                "retention rule changed since the review (reviewed: adult, now: adult)",
            ),
        ),
        (
            "retain-until moved (birth date corrected)",
            _now(decision=RetentionDecision("adult", "f1", dt.date(2030, 1, 1), "")),
            TODAY,
            DeletionCheck(
                Verdict.SKIP, "retain-until changed since the review (2026-05-01 -> 2030-01-01)"
            ),
        ),
        (
            "now kept indefinitely",
            _now(decision=RetentionDecision("adult", "f1", None, "")),
            TODAY,
            DeletionCheck(
                Verdict.SKIP, "retain-until changed since the review (2026-05-01 -> indefinitely)"
            ),
        ),
        (
            "look-ahead review: on its last day",
            AS_REVIEWED,
            UNTIL,
            DeletionCheck(Verdict.PENDING, "approved; to be deleted after 2026-05-01"),
        ),
        ("the day after retain-until", AS_REVIEWED, UNTIL + dt.timedelta(days=1),
         DeletionCheck(Verdict.DELETE)),
        (
            "an instance added",
            _now(instances=4, max_instance_id=43),
            TODAY,
            DeletionCheck(
                Verdict.SKIP, "contents changed since the review (3 instances reviewed, 4 now)"
            ),
        ),
        (
            "an instance replaced (same count, newer row)",
            _now(max_instance_id=50),
            TODAY,
            DeletionCheck(
                Verdict.SKIP, "contents changed since the review (3 instances reviewed, 3 now)"
            ),
        ),
        (
            "an object under S3 Object Lock",
            _now(locks=[LOCK]),
            TODAY,
            DeletionCheck(
                Verdict.SKIP,
                "under S3 Object Lock on primary (sha256/ab/cd/abcd locked until 2030-01-01)",
            ),
        ),
        (
            "objects under an object legal hold on a replica",
            _now(locks=[ObjectLock("dr", "sha256/00/11/0011", None), LOCK]),
            TODAY,
            DeletionCheck(
                Verdict.SKIP,
                "under S3 Object Lock on dr (sha256/00/11/0011 locked by a legal hold on the"
                " object and 1 more)",
            ),
        ),
        (
            "a store that cannot be asked about locks",
            _now(unchecked_stores=["dr"]),
            TODAY,
            DeletionCheck(
                Verdict.SKIP, "store dr did not answer: S3 Object Lock could not be checked"
            ),
        ),
    ],
)  # fmt: skip
def test_deletion_guards(case: str, now: StudyNow, today: dt.date, expected: DeletionCheck) -> None:
    assert check_deletion(REVIEWED, now, today) == expected, case


def test_a_lock_never_lets_a_deletion_through() -> None:
    # Whatever else is true of the study, a locked object keeps it.
    for today in (UNTIL, TODAY, TODAY + dt.timedelta(days=3650)):
        assert check_deletion(REVIEWED, _now(locks=[LOCK]), today).verdict is not Verdict.DELETE
