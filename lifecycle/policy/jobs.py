"""What happens to a job that failed: retried later, with back-off, or declared dead."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FailureOutcome:
    #: "retry" (queued again after ``delay_seconds``) or "dead" (left for the administrator).
    state: str
    delay_seconds: int = 0


def retry_delay(attempts: int, base_seconds: int, max_seconds: int) -> int:
    """Exponential back-off: base after the first failed attempt, doubling, capped."""
    exponent = max(attempts - 1, 0)
    # Capping the exponent first keeps the number small whatever the attempt count.
    return min(base_seconds * 2 ** min(exponent, 32), max_seconds)


def after_failure(
    attempts: int, max_attempts: int, retriable: bool, base_seconds: int, max_seconds: int
) -> FailureOutcome:
    """``attempts`` counts the attempt that just failed.  A permanent error (the same input
    would fail the same way) goes dead at once instead of burning the remaining attempts."""
    if not retriable or attempts >= max_attempts:
        return FailureOutcome("dead")
    return FailureOutcome("retry", retry_delay(attempts, base_seconds, max_seconds))
