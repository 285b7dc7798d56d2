"""Which worker the supervisor deals the next DIMSE association to (vna.handoff.pick)."""

from __future__ import annotations

from vna.handoff import pick


def test_the_worker_with_the_fewest_open_associations() -> None:
    assert pick([3, 1, 2], [True, True, True], turn=1) == 1


def test_equals_take_turns_instead_of_piling_on_the_first() -> None:
    active, ready, turn = [0, 0, 0], [True, True, True], -1
    dealt = []
    for _ in range(6):
        turn = pick(active, ready, turn)  # type: ignore[assignment]
        dealt.append(turn)
        active[turn] += 1
    assert dealt == [0, 1, 2, 0, 1, 2]


def test_a_worker_still_starting_gets_nothing() -> None:
    assert pick([5, 0], [True, False], turn=0) == 0
    assert pick([0, 0], [False, False], turn=0) is None
