"""Forward rule matching (lifecycle.policy.forwarding): each condition, their conjunction,
and that a named condition without a value never matches."""

from __future__ import annotations

import pytest

from lifecycle.policy.forwarding import InstanceFacts, matches, matching_rules
from vna.config import ForwardRuleSettings

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"

STOWED = InstanceFacts("HOSP1", "CT", CT_IMAGE, "", None)
FACTS = InstanceFacts(
    source="HOSP1",
    modality="CT",
    sop_class_uid=CT_IMAGE,
    study_description="CT Thorax with contrast",
    calling_ae_title="HOSP1PACS",
)


def rule(**conditions: object) -> ForwardRuleSettings:
    return ForwardRuleSettings(name="r", destination="pacs2", **conditions)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("conditions", "facts", "expected"),
    [
        ({}, FACTS, True),
        ({"sources": ("HOSP1",)}, FACTS, True),
        ({"sources": ("HOSP2",)}, FACTS, False),
        ({"modalities": ("MR", "ct")}, FACTS, True),
        ({"modalities": ("MR",)}, FACTS, False),
        ({"modalities": ("CT",)}, InstanceFacts("HOSP1", None, CT_IMAGE, None, None), False),
        ({"sop_classes": (CT_IMAGE,)}, FACTS, True),
        ({"sop_classes": (MR_IMAGE,)}, FACTS, False),
        ({"study_description": "*THORAX*"}, FACTS, True),
        ({"study_description": "*abdomen*"}, FACTS, False),
        ({"study_description": "*"}, InstanceFacts("HOSP1", "CT", CT_IMAGE, None, None), False),
        ({"calling_ae_titles": ("HOSP1PACS",)}, FACTS, True),
        ({"calling_ae_titles": ("OTHER",)}, FACTS, False),
        # Stored by STOW-RS: no calling AE title, so an AE condition does not match.
        ({"calling_ae_titles": ("HOSP1PACS",)}, STOWED, False),
        ({"sources": ("HOSP1",), "modalities": ("CT",), "study_description": "CT*"}, FACTS, True),
        ({"sources": ("HOSP1",), "modalities": ("MR",), "study_description": "CT*"}, FACTS, False),
    ],
)  # fmt: skip
def test_matches(conditions: dict[str, object], facts: InstanceFacts, expected: bool) -> None:
    assert matches(rule(**conditions), facts) is expected


def test_one_rule_per_destination_in_configuration_order() -> None:
    first = ForwardRuleSettings(name="a", destination="pacs2", modalities=("CT",), delay_seconds=60)
    second = ForwardRuleSettings(name="b", destination="pacs2")
    other = ForwardRuleSettings(name="c", destination="ai")
    never = ForwardRuleSettings(name="d", destination="research", modalities=("MR",))
    assert matching_rules([first, second, other, never], FACTS) == [first, other]
