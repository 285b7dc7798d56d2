"""Tiering: which tier a study's objects belong in, from its age, its last access and the rules.

Objects only ever move colder here.  Bringing an object back is what a retrieve does (a restore
of an offline object), and the rules would send it straight back anyway if they still held.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from vna.config import TieringRuleSettings
from vna.tiers import TIERS


@dataclass(frozen=True)
class TieringFacts:
    """What tiering rules look at, for one study."""

    study_date: dt.date | None
    received_date: dt.date
    #: The latest retrieve of any of its instances; the received date if never retrieved.
    last_access: dt.date
    modalities: frozenset[str]
    source: str


@dataclass(frozen=True)
class TierDecision:
    tier: str
    #: The deciding rule (its name, or its position when unnamed); empty for "hot".
    rule: str
    #: The deciding rule's codec: the form the objects are re-encoded in as they move (empty:
    #: as they are).
    codec: str = ""


def tier_rank(tier: str) -> int:
    """0 for hot, 1 for warm, 2 for cold; colder is larger."""
    return TIERS.index(tier)


def study_age_days(facts: TieringFacts, today: dt.date) -> int:
    # A missing study date counts from reception: later, so the study stays warmer, which
    # costs money but never availability.
    return (today - (facts.study_date or facts.received_date)).days


def rule_holds(rule: TieringRuleSettings, facts: TieringFacts, today: dt.date) -> bool:
    if rule.modalities and not facts.modalities & set(rule.modalities):
        return False
    if rule.sources and facts.source not in rule.sources:
        return False
    if rule.min_study_age_days is not None and study_age_days(facts, today) < (
        rule.min_study_age_days
    ):
        return False
    return not (
        rule.min_days_since_access is not None
        and (today - facts.last_access).days < rule.min_days_since_access
    )


def target_tier(
    facts: TieringFacts, rules: Iterable[TieringRuleSettings], today: dt.date
) -> TierDecision:
    """The coldest tier among the rules that hold; hot when none does."""
    best = TierDecision("hot", "")
    for index, rule in enumerate(rules):
        if rule_holds(rule, facts, today) and tier_rank(rule.tier) > tier_rank(best.tier):
            best = TierDecision(rule.tier, rule.name or f"tiering_rules[{index}]", rule.codec)
    return best


def needs_move(current_tiers: Iterable[str], target: str) -> bool:
    """Whether any object of the study is warmer than the target (moves are colder only)."""
    return any(tier_rank(t) < tier_rank(target) for t in current_tiers)
