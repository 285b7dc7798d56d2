"""The viewer upkeep's decision for an instance listed for a layout (lifecycle.policy)."""

from __future__ import annotations

import pytest

from lifecycle.policy.viewer_upkeep import LayoutAction, layout_action


@pytest.mark.parametrize(
    ("exists", "has_layout", "offline", "action"),
    [
        (True, False, False, LayoutAction.COMPUTE),
        (True, True, False, LayoutAction.DONE),  # a retrieve recorded it meanwhile
        (False, False, False, LayoutAction.DONE),  # deleted since
        (True, False, True, LayoutAction.SKIP_OFFLINE),  # never a restore for upkeep
        (True, True, True, LayoutAction.DONE),
    ],
)
def test_layout_action(exists: bool, has_layout: bool, offline: bool, action: LayoutAction) -> None:
    assert layout_action(exists=exists, has_layout=has_layout, offline=offline) is action
