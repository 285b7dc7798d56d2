"""Tiering, compression and job-retry policies: table tests, boundaries included."""

from __future__ import annotations

import datetime as dt

import pytest

from lifecycle.policy.compression import UNCOMPRESSED_TRANSFER_SYNTAXES, plan, worth_keeping
from lifecycle.policy.jobs import after_failure, retry_delay
from lifecycle.policy.tiering import (
    TierDecision,
    TieringFacts,
    needs_move,
    study_age_days,
    target_tier,
    tier_rank,
)
from vna.config import CompressionSettings, TieringRuleSettings

D = dt.date
TODAY = D(2025, 6, 1)
WARM_IDLE = TieringRuleSettings(tier="warm", name="idle", min_days_since_access=30)
COLD_OLD = TieringRuleSettings(tier="cold", name="old", min_study_age_days=365)
COLD_OLD_IDLE_CT = TieringRuleSettings(
    tier="cold",
    name="old-idle-ct",
    min_study_age_days=180,
    min_days_since_access=90,
    modalities=("CT",),
)


STUDY_DATE = D(2025, 1, 1)
RECEIVED = D(2025, 1, 2)
YESTERDAY = D(2025, 5, 31)


def tf(
    study: dt.date | None = STUDY_DATE,
    received: dt.date = RECEIVED,
    access: dt.date = YESTERDAY,
    modalities: tuple[str, ...] = ("CT",),
    source: str = "HOSP1",
) -> TieringFacts:
    return TieringFacts(study, received, access, frozenset(modalities), source)


@pytest.mark.parametrize(
    ("case", "facts", "rules", "tier"),
    [
        ("no rules: hot", tf(), (), "hot"),
        ("accessed yesterday", tf(), (WARM_IDLE,), "hot"),
        (
            "idle exactly 30 days: warm",
            tf(access=TODAY - dt.timedelta(days=30)),
            (WARM_IDLE,),
            "warm",
        ),
        ("idle 29 days: hot", tf(access=TODAY - dt.timedelta(days=29)), (WARM_IDLE,), "hot"),
        (
            "study exactly 365 days old: cold",
            tf(study=TODAY - dt.timedelta(days=365)),
            (COLD_OLD,),
            "cold",
        ),
        ("study 364 days old: hot", tf(study=TODAY - dt.timedelta(days=364)), (COLD_OLD,), "hot"),
        (
            "coldest wins, whatever the order",
            tf(study=D(2020, 1, 1), access=D(2020, 1, 1)),
            (COLD_OLD, WARM_IDLE),
            "cold",
        ),
        (
            "coldest wins, reversed",
            tf(study=D(2020, 1, 1), access=D(2020, 1, 1)),
            (WARM_IDLE, COLD_OLD),
            "cold",
        ),
        (
            "no study date: age counts from reception",
            tf(study=None, received=TODAY - dt.timedelta(days=10)),
            (COLD_OLD,),
            "hot",
        ),
        (
            "both conditions must hold: old but recently read",
            tf(study=D(2024, 1, 1), access=D(2025, 5, 1)),
            (COLD_OLD_IDLE_CT,),
            "hot",
        ),
        (
            "both conditions hold",
            tf(study=D(2024, 1, 1), access=D(2025, 1, 1)),
            (COLD_OLD_IDLE_CT,),
            "cold",
        ),
        (
            "modality filter",
            tf(study=D(2024, 1, 1), access=D(2025, 1, 1), modalities=("MR",)),
            (COLD_OLD_IDLE_CT,),
            "hot",
        ),
        (
            "source filter",
            tf(study=D(2020, 1, 1)),
            (TieringRuleSettings(tier="cold", min_study_age_days=1, sources=("HOSP2",)),),
            "hot",
        ),
    ],
)
def test_target_tier(
    case: str, facts: TieringFacts, rules: tuple[TieringRuleSettings, ...], tier: str
) -> None:
    assert target_tier(facts, rules, TODAY).tier == tier, case


def test_target_tier_names_the_deciding_rule() -> None:
    unnamed_cold = TieringRuleSettings(tier="cold", min_study_age_days=1)
    old = tf(study=D(2020, 1, 1), access=D(2020, 1, 1))
    assert target_tier(old, (WARM_IDLE, unnamed_cold), TODAY) == TierDecision(
        "cold", "tiering_rules[1]"
    )
    assert target_tier(old, (WARM_IDLE,), TODAY) == TierDecision("warm", "idle")
    assert target_tier(tf(), (WARM_IDLE,), TODAY) == TierDecision("hot", "")


def test_target_tier_carries_the_deciding_rule_s_codec() -> None:
    cold_jls = TieringRuleSettings(tier="cold", name="arch", min_study_age_days=1, codec="jpeg-ls")
    old = tf(study=D(2020, 1, 1), access=D(2020, 1, 1))
    assert target_tier(old, (WARM_IDLE, cold_jls), TODAY) == TierDecision("cold", "arch", "jpeg-ls")
    # A warmer rule's codec is not the deciding one's.
    warm_htj2k = TieringRuleSettings(tier="warm", min_days_since_access=1, codec="htj2k")
    assert target_tier(old, (warm_htj2k,), TODAY).codec == "htj2k"
    assert target_tier(old, (warm_htj2k, COLD_OLD), TODAY).codec == ""


def test_study_age_days() -> None:
    assert study_age_days(tf(study=D(2025, 5, 1)), TODAY) == 31
    assert study_age_days(tf(study=None, received=D(2025, 5, 31)), TODAY) == 1


@pytest.mark.parametrize(
    ("current", "target", "move"),
    [
        ({"hot"}, "warm", True),
        ({"hot"}, "hot", False),
        ({"warm"}, "warm", False),
        ({"cold"}, "warm", False),  # never warmer: that is a restore
        ({"cold"}, "hot", False),
        ({"hot", "cold"}, "cold", True),
        ({"warm", "cold"}, "cold", True),
        (set(), "cold", False),
    ],
)
def test_needs_move(current: set[str], target: str, move: bool) -> None:
    assert needs_move(current, target) is move


def test_tier_rank_orders_warmest_first() -> None:
    assert tier_rank("hot") < tier_rank("warm") < tier_rank("cold")


# --- compression --------------------------------------------------------------------------------

EXPLICIT_LE = "1.2.840.10008.1.2.1"
ON = CompressionSettings(level=9, min_size=4096, min_saving_percent=5)


@pytest.mark.parametrize(
    ("ts", "size", "compression", "tier", "settings", "compress"),
    [
        (EXPLICIT_LE, 500_000, "none", "hot", ON, True),
        ("1.2.840.10008.1.2", 500_000, "none", "hot", ON, True),  # implicit VR LE
        ("1.2.840.10008.1.2.2", 500_000, "none", "hot", ON, True),  # explicit VR BE
        ("1.2.840.10008.1.2.1.98", 500_000, "none", "hot", ON, True),  # encapsulated uncompressed
        ("1.2.840.10008.1.2.1.99", 500_000, "none", "hot", ON, False),  # deflated
        ("1.2.840.10008.1.2.4.50", 500_000, "none", "hot", ON, False),  # JPEG baseline
        ("1.2.840.10008.1.2.4.90", 500_000, "none", "hot", ON, False),  # JPEG 2000 lossless
        ("1.2.840.10008.1.2.5", 500_000, "none", "hot", ON, False),  # RLE
        (EXPLICIT_LE, 4096, "none", "hot", ON, True),  # exactly min_size
        (EXPLICIT_LE, 4095, "none", "hot", ON, False),
        (EXPLICIT_LE, 500_000, "zstd", "hot", ON, False),  # already done
        (EXPLICIT_LE, 500_000, "none", "warm", ON, False),
        (EXPLICIT_LE, 500_000, "none", "cold", ON, False),
        (EXPLICIT_LE, 500_000, "none", "hot", CompressionSettings(level=0), False),
    ],
)
def test_compression_plan(
    ts: str, size: int, compression: str, tier: str, settings: CompressionSettings, compress: bool
) -> None:
    decision = plan(ts, size, compression, tier, settings)
    assert decision.compress is compress
    assert bool(decision.reason) is not compress


def test_uncompressed_transfer_syntaxes_are_the_native_ones() -> None:
    assert "1.2.840.10008.1.2.1.99" not in UNCOMPRESSED_TRANSFER_SYNTAXES


@pytest.mark.parametrize(
    ("original", "compressed", "min_saving", "keep"),
    [
        (1000, 950, 5, True),  # exactly 5 %
        (1000, 951, 5, False),
        (1000, 500, 5, True),
        (1000, 1000, 0, False),  # no saving at all is never kept
        (1000, 999, 0, True),
        (1000, 1200, 0, False),  # grew
        (0, 0, 0, False),
    ],
)
def test_worth_keeping(original: int, compressed: int, min_saving: int, keep: bool) -> None:
    assert worth_keeping(original, compressed, min_saving) is keep


# --- job retries --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(0, 30), (1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (1000, 3600)],
)
def test_retry_delay_doubles_up_to_the_cap(attempts: int, delay: int) -> None:
    assert retry_delay(attempts, 30, 3600) == delay


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "retriable", "state", "delay"),
    [
        (1, 8, True, "retry", 30),
        (7, 8, True, "retry", 1920),
        (8, 8, True, "dead", 0),  # attempts used up
        (9, 8, True, "dead", 0),
        (1, 8, False, "dead", 0),  # permanent error: dead at once
    ],
)
def test_after_failure(
    attempts: int, max_attempts: int, retriable: bool, state: str, delay: int
) -> None:
    outcome = after_failure(attempts, max_attempts, retriable, 30, 3600)
    assert (outcome.state, outcome.delay_seconds) == (state, delay)
