"""How a STOW-RS destination's Store Instances Response (PS3.18 10.5.3) becomes each forwarded
instance's outcome: what `vna forward status` shows as sent, and what as failed and why."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from lifecycle.forwarding import stow_outcomes
from vna.dicom.sending import NO_RESPONSE

A, B, C = "1.2.3.1", "1.2.3.2", "1.2.3.3"


def _ref(uid: str, warning: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"00081155": {"vr": "UI", "Value": [uid]}}
    if warning is not None:
        item["00081196"] = {"vr": "US", "Value": [warning]}
    return item


def _failed(uid: str | None, reason: int) -> dict[str, Any]:
    item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [reason]}}
    if uid is not None:
        item["00081155"] = {"vr": "UI", "Value": [uid]}
    return item


def _answer(
    referenced: Sequence[dict[str, Any]] = (), failed: Sequence[dict[str, Any]] = ()
) -> str:
    body: dict[str, Any] = {}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": list(referenced)}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": list(failed)}
    return json.dumps(body)


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        # Everything stored.
        (200, _answer([_ref(A), _ref(B), _ref(C)]), [0, 0, 0]),
        # 200 says all were stored, even where the answer lists none of them.
        (200, "", [0, 0, 0]),
        # One refused with its FailureReason, the others stored as sent.
        (202, _answer([_ref(A), _ref(C)], [_failed(B, 0xA700)]), [0, 0xA700, 0]),
        # Stored with a WarningReason (coercion): delivered, the reason kept.
        (202, _answer([_ref(A, 0xB000), _ref(B), _ref(C)]), [0xB000, 0, 0]),
        # None stored: each with its own reason.
        (
            409,
            _answer([], [_failed(A, 0x0111), _failed(B, 0xA900), _failed(C, 0xC000)]),
            [0x0111, 0xA900, 0xC000],
        ),
        # A failure naming no instance (a part the server could not read) goes to an unnamed one.
        (202, _answer([_ref(A), _ref(B)], [_failed(None, 0xC000)]), [0, 0, 0xC000]),
        # Refused as a whole without a body to say more: the HTTP status stands for each.
        (401, "Unauthorized", [401, 401, 401]),
        (400, "{not json", [400, 400, 400]),
    ],
)
def test_each_instance_gets_the_outcome_the_answer_gives_it(
    code: int, text: str, expected: list[int]
) -> None:
    outcomes = stow_outcomes(code, text, [A, B, C])
    assert [o.sop_uid for o in outcomes] == [A, B, C]
    assert [o.status for o in outcomes] == expected
    assert all(o.status != NO_RESPONSE for o in outcomes)


def test_a_refusal_says_which_http_status_carried_it() -> None:
    (stored, refused) = stow_outcomes(202, _answer([_ref(A)], [_failed(B, 0xA700)]), [A, B])
    assert stored.delivered and stored.error == ""
    assert not refused.delivered and refused.error == "HTTP 202"


def test_a_202_naming_an_instance_nowhere_counts_it_stored_with_warnings() -> None:
    (outcome,) = stow_outcomes(202, "", [A])
    assert outcome.delivered and outcome.status == 0xB000
