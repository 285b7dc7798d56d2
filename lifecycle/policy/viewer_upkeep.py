"""What the viewer upkeep does with an instance listed for a layout (pure; migration 0211)."""

from __future__ import annotations

from enum import Enum


class LayoutAction(Enum):
    #: Read the object and record its layout.
    COMPUTE = "compute"
    #: Nothing to do (deleted since, or a retrieve recorded its layout meanwhile): done.
    DONE = "done"
    #: In an offline tier: reading it would mean a restore (a fee and hours), which upkeep
    #: never causes; its first retrieve after a restore finds the layout instead.
    SKIP_OFFLINE = "skip-offline"


def layout_action(*, exists: bool, has_layout: bool, offline: bool) -> LayoutAction:
    if not exists or has_layout:
        return LayoutAction.DONE
    if offline:
        return LayoutAction.SKIP_OFFLINE
    return LayoutAction.COMPUTE
