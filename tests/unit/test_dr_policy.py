"""The pure decisions of disaster recovery, as tables: replication targets and read order,
what a read proves, drill findings and verdicts, RPO, and which object a rebuild files."""

from __future__ import annotations

import datetime as dt

import pytest

from vna.recovery.policy import (
    Choice,
    Finding,
    FoundObject,
    Outcome,
    choose_version,
    drill_finding,
    drill_passed,
    expected_on_replica,
    judge_read,
    read_order,
    recovery_point_seconds,
    replication_targets,
)

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("active", "replicas", "targets", "order"),
    [
        ("primary", (), (), ()),
        ("primary", ("dr",), ("dr",), ("dr",)),
        ("primary", ("dr", "nas"), ("dr", "nas"), ("dr", "nas")),
        # Failed over: the primary is not a target (failback resynchronises it) but reads
        # still try it last, in case it is back.
        ("dr", ("dr",), (), ("primary",)),
        ("dr", ("dr", "nas"), ("nas",), ("nas", "primary")),
        ("nas", ("dr", "nas"), ("dr",), ("dr", "primary")),
    ],
)
def test_targets_and_read_order(
    active: str, replicas: tuple[str, ...], targets: tuple[str, ...], order: tuple[str, ...]
) -> None:
    assert replication_targets(active, replicas) == targets
    assert read_order(active, replicas) == order


@pytest.mark.parametrize(
    ("kwargs", "outcome"),
    [
        ({"found": True, "sha256": "a", "size": 10}, Outcome.VERIFIED),
        ({"found": False}, Outcome.MISSING),
        ({"found": False, "readable": False}, Outcome.MISSING),
        ({"found": True, "readable": False}, Outcome.UNREADABLE),
        ({"found": True, "decodable": False, "sha256": "a", "size": 10}, Outcome.CORRUPT),
        ({"found": True, "sha256": "b", "size": 10}, Outcome.CORRUPT),
        ({"found": True, "sha256": "a", "size": 9}, Outcome.CORRUPT),  # truncated
    ],
)
def test_judge_read(kwargs: dict, outcome: Outcome) -> None:
    assert judge_read("a", 10, **kwargs) is outcome


@pytest.mark.parametrize(
    ("outcome", "expected", "finding"),
    [
        (Outcome.VERIFIED, True, Finding.OK),
        (Outcome.VERIFIED, False, Finding.OK),  # copied, not recorded yet
        (Outcome.MISSING, True, Finding.DEFECT),
        (Outcome.MISSING, False, Finding.NOT_YET_REPLICATED),
        (Outcome.CORRUPT, True, Finding.DEFECT),
        (Outcome.CORRUPT, False, Finding.DEFECT),  # it would be served: a defect regardless
        (Outcome.UNREADABLE, True, Finding.DEFECT),
        (Outcome.UNREADABLE, False, Finding.DEFECT),
    ],
)
def test_drill_finding(outcome: Outcome, expected: bool, finding: Finding) -> None:
    assert drill_finding(outcome, expected) is finding


@pytest.mark.parametrize(
    ("recorded", "age_seconds", "grace", "expected"),
    [
        (True, 0, None, True),
        (False, 10**6, None, False),  # archive replication: only the record counts
        (False, 60, 900, False),  # storage replication: young, may still be in flight
        (False, 901, 900, True),
        (True, 1, 900, True),
    ],
)
def test_expected_on_replica(
    recorded: bool, age_seconds: int, grace: float | None, expected: bool
) -> None:
    received = NOW - dt.timedelta(seconds=age_seconds)
    assert expected_on_replica(recorded, received, NOW, grace) is expected


def test_recovery_point() -> None:
    assert recovery_point_seconds(None, NOW) == 0
    assert recovery_point_seconds(NOW - dt.timedelta(minutes=5), NOW) == 300
    assert recovery_point_seconds(NOW + dt.timedelta(seconds=3), NOW) == 0  # clock skew


@pytest.mark.parametrize(
    ("defects", "rpo", "target", "passed"),
    [
        (0, 0.0, None, True),
        (0, 3600.0, None, True),
        (1, 0.0, None, False),
        (0, 300.0, 900.0, True),
        (0, 901.0, 900.0, False),
        (2, 10.0, 900.0, False),
    ],
)
def test_drill_passed(defects: int, rpo: float, target: float | None, passed: bool) -> None:
    assert drill_passed(defects, rpo, target) is passed


T1 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
T2 = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def obj(sha: str, compressed: bool = False, when: dt.datetime | None = T1) -> FoundObject:
    return FoundObject(f"sha256/{sha}{'.zst' if compressed else ''}", sha, compressed, when)


@pytest.mark.parametrize(
    ("current", "found", "choice"),
    [
        # Same content: the compressed form is what the catalogue last pointed to.
        (obj("a"), obj("a", compressed=True), Choice.SWITCH_ENCODING),
        (obj("a", compressed=True), obj("a"), Choice.KEEP),
        (obj("a"), obj("a"), Choice.KEEP),
        # Other content: the later version is current.
        (obj("a", when=T1), obj("b", when=T2), Choice.NEWER),
        (obj("a", when=T2), obj("b", when=T1), Choice.OLDER),
        (obj("a", when=None), obj("b", when=T1), Choice.NEWER),  # a known time wins
        (obj("a", when=T1), obj("b", when=None), Choice.OLDER),
        # Equal times: decided by digest, the same whatever order the store lists them in.
        (obj("a", when=T1), obj("b", when=T1), Choice.NEWER),
        (obj("b", when=T1), obj("a", when=T1), Choice.OLDER),
    ],
)
def test_choose_version(current: FoundObject, found: FoundObject, choice: Choice) -> None:
    assert choose_version(current, found) is choice


def test_naive_times_are_taken_as_utc() -> None:
    naive = FoundObject("k", "b", False, dt.datetime(2025, 6, 1))
    assert choose_version(obj("a", when=T1), naive) is Choice.NEWER
