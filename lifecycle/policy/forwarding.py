"""Which forward rules (``[[forward]]``) an instance matches: pure, no I/O.

Conservative by construction, like retention's rules: a condition a rule names and the
instance has no value for (no Study Description, not received by C-STORE) does not match, so
that an instance is never released to a destination on a guess.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from vna.config import ForwardRuleSettings


@dataclass(frozen=True)
class InstanceFacts:
    source: str
    modality: str | None
    sop_class_uid: str
    study_description: str | None
    #: The AE title that stored it by C-STORE; None for STOW-RS and folder imports.
    calling_ae_title: str | None


def matches(rule: ForwardRuleSettings, facts: InstanceFacts) -> bool:
    if rule.sources and facts.source not in rule.sources:
        return False
    if rule.modalities and (facts.modality or "").upper() not in {
        m.upper() for m in rule.modalities
    }:
        return False
    if rule.sop_classes and facts.sop_class_uid not in rule.sop_classes:
        return False
    if rule.study_description and (
        facts.study_description is None
        or not fnmatch.fnmatchcase(facts.study_description.upper(), rule.study_description.upper())
    ):
        return False
    return not rule.calling_ae_titles or facts.calling_ae_title in rule.calling_ae_titles


def matching_rules(
    rules: Sequence[ForwardRuleSettings], facts: InstanceFacts
) -> list[ForwardRuleSettings]:
    """The rules the instance matches, in configuration order; one per destination (two rules
    sending an instance to one destination send it once: the first decides the delay)."""
    out: list[ForwardRuleSettings] = []
    seen: set[str] = set()
    for rule in rules:
        if rule.target not in seen and matches(rule, facts):
            out.append(rule)
            seen.add(rule.target)
    return out
