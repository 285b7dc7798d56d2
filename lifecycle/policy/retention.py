"""Retention: until when a study must be kept, from its facts and the declared rules.

Conservative by construction, because a deletion cannot be undone and keeping a study a little
longer can:

* of the rules that apply, the one keeping the study longest decides, so adding a rule never
  brings a computed retain-until date forward, and rule order does not matter;
* a criterion that cannot be evaluated (age without a birth date or a study date, a study date
  range without a study date) counts as matching, so the longer rule it guards still applies;
  and when no rule applies for certain, the study is kept indefinitely, because it may be one
  that no rule covers (those are kept indefinitely);
* a period that cannot be computed (until an age, without a birth date) keeps the study
  indefinitely; a period from a missing study date runs from the date the archive first
  received the study, which is never earlier than the acquisition;
* a study is due the day *after* its retain-until date;
* a person born on 29 February reaches an age on 1 March in common years, and 29 February plus
  whole years is 1 March in common years: the later of the two candidate dates, both times.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vna.config import RetentionRuleSettings

#: Bump when the computation changes, so that every study is recomputed under the new code.
POLICY_VERSION = 1


@dataclass(frozen=True)
class StudyFacts:
    """What retention rules look at, for one study."""

    study_date: dt.date | None
    #: When the archive first received the study (stands in for a missing study date).
    received_date: dt.date
    birth_date: dt.date | None
    modalities: frozenset[str]
    study_description: str
    source: str


@dataclass(frozen=True)
class RetentionDecision:
    #: The deciding rule's name; empty when no rule applies.
    rule: str
    rule_fingerprint: str
    #: Keep through this date; None keeps the study indefinitely.
    retain_until: dt.date | None
    #: One line a records manager can read: why this date.
    basis: str


NO_RULE = RetentionDecision("", "", None, "no retention rule applies: kept indefinitely")


def parse_dicom_date(value: str | None) -> dt.date | None:
    """A DA value (PS3.5 6.2: YYYYMMDD; ACR-NEMA's YYYY.MM.DD is still met in old data) as a
    date; None for an empty, partial or impossible date."""
    if not value:
        return None
    text = value.strip().replace(".", "").replace("-", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def add_years(day: dt.date, years: int) -> dt.date:
    """The same calendar day ``years`` later; 29 February becomes 1 March in a common year."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February into a common year
        return dt.date(day.year + years, 3, 1)


def age_on(birth: dt.date, day: dt.date) -> int:
    """Age in whole years on ``day``; birthdays on 29 February count on 1 March in common years
    (the later reading: a patient is a child for one more day, never one less)."""
    age = day.year - birth.year
    if day < add_years(birth, age):
        age -= 1
    return age


def rule_fingerprint(rule: RetentionRuleSettings) -> str:
    """A short digest of everything a rule says; a review remembers it, and an approval refuses
    a study whose rule has changed since."""
    canonical = json.dumps(dataclasses.asdict(rule), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def rules_fingerprint(rules: Sequence[RetentionRuleSettings]) -> str:
    """A digest of the whole rule set; studies computed under another one are recomputed."""
    parts = [f"v{POLICY_VERSION}", *(rule_fingerprint(r) for r in rules)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def applies(rule: RetentionRuleSettings, facts: StudyFacts) -> bool | None:
    """True if the rule applies, False if not, None if a criterion it names cannot be
    evaluated (age without a birth date or study date, a date range without a study date)."""
    if rule.modalities and not facts.modalities & set(rule.modalities):
        return False
    if rule.sources and facts.source not in rule.sources:
        return False
    if rule.study_description and not fnmatch.fnmatchcase(
        facts.study_description.upper(), rule.study_description.upper()
    ):
        return False
    unknown = False
    if rule.study_date_from is not None or rule.study_date_to is not None:
        if facts.study_date is None:
            unknown = True
        elif (rule.study_date_from is not None and facts.study_date < rule.study_date_from) or (
            rule.study_date_to is not None and facts.study_date > rule.study_date_to
        ):
            return False
    if rule.min_age_at_study is not None or rule.max_age_at_study is not None:
        if facts.birth_date is None or facts.study_date is None:
            unknown = True
        else:
            age = age_on(facts.birth_date, facts.study_date)
            if rule.min_age_at_study is not None and age < rule.min_age_at_study:
                return False
            if rule.max_age_at_study is not None and age > rule.max_age_at_study:
                return False
    return None if unknown else True


def _period(rule: RetentionRuleSettings, facts: StudyFacts) -> tuple[dt.date | None, str]:
    """(retain-until, basis) of one rule for one study; None keeps indefinitely."""
    candidates: list[tuple[dt.date, str]] = []
    if rule.retain_years is not None:
        if facts.study_date is not None:
            candidates.append(
                (
                    add_years(facts.study_date, rule.retain_years),
                    f"{rule.retain_years} years after the study date {facts.study_date}",
                )
            )
        else:
            candidates.append(
                (
                    add_years(facts.received_date, rule.retain_years),
                    f"{rule.retain_years} years after {facts.received_date}, when the archive"
                    " received it (no study date)",
                )
            )
    if rule.retain_until_age is not None:
        if facts.birth_date is None:
            return None, f"kept indefinitely: no birth date to apply age {rule.retain_until_age}"
        candidates.append(
            (
                add_years(facts.birth_date, rule.retain_until_age),
                f"until the patient's age {rule.retain_until_age} (born {facts.birth_date})",
            )
        )
    return max(candidates, key=lambda c: c[0])


def retention(facts: StudyFacts, rules: Iterable[RetentionRuleSettings]) -> RetentionDecision:
    """The retain-until date of a study: the latest of the rules that apply.

    When a missing fact leaves it open whether rules apply, and none applies for certain, the
    study might be one no rule covers, which is kept indefinitely: so it is kept indefinitely.
    When one rule does apply for certain, the latest of those that apply or may apply decides.
    """
    certain = False
    best: RetentionDecision | None = None
    for rule in rules:
        verdict = applies(rule, facts)
        if verdict is False:
            continue
        certain |= verdict is True
        until, basis = _period(rule, facts)
        decision = RetentionDecision(rule.name, rule_fingerprint(rule), until, basis)
        if best is None or _keeps_longer(decision, best):
            best = decision
    if best is None:
        return NO_RULE
    if not certain and best.retain_until is not None:
        missing = "birth date" if facts.birth_date is None else "study date"
        return RetentionDecision(
            best.rule,
            best.rule_fingerprint,
            None,
            f"kept indefinitely: without a {missing} no rule applies for certain",
        )
    return best


def _keeps_longer(a: RetentionDecision, b: RetentionDecision) -> bool:
    if b.retain_until is None:
        return False  # nothing is later than indefinitely; the first such rule is named
    return a.retain_until is None or a.retain_until > b.retain_until


def is_due(retain_until: dt.date | None, as_of: dt.date) -> bool:
    """Whether a study kept through ``retain_until`` may be deleted on ``as_of``."""
    return retain_until is not None and as_of > retain_until
