"""The side-by-side benchmark's report (bench/ingest.py): what it prints from several rounds.

The harness itself needs Orthanc and minutes of machine time; its arithmetic does not.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
ingest = pytest.importorskip("ingest")


def _side(stow: float, qido_p95: float, rss: float, port: int) -> dict[str, Any]:
    return {
        "server": {"http_port": port, "dimse_port": port + 1},
        "stow": {"instances_per_s": stow, "problems": []},
        "qido": {"patient_id": {"p95_ms": qido_p95}},
        "memory": {"peak_rss_server_mb": rss, "memory_samples": 10},
        "cpu_steal_percent": 0.5,
    }


def test_figures_are_medians_over_rounds_and_memory_the_highest_peak() -> None:
    rounds = [
        _side(200.0, 9.0, 290.0, 1000),
        _side(250.0, 7.0, 310.0, 2000),
        _side(220.0, 8.0, 300.0, 3000),
    ]
    combined = ingest.combine(rounds)
    assert combined["stow"]["instances_per_s"] == 220.0
    assert combined["qido"]["patient_id"]["p95_ms"] == 8.0
    assert combined["memory"]["peak_rss_server_mb"] == 310.0  # a peak is the highest seen
    assert combined["server"] == {"http_port": 1000, "dimse_port": 1001}  # not a median port


def test_a_failed_round_fails_the_side_and_names_the_round() -> None:
    rounds = [_side(200.0, 9.0, 290.0, 1000), {"error": "HTTP 500 on STOW-RS"}]
    assert ingest.combine(rounds)["error"] == "round 2: HTTP 500 on STOW-RS"
    assert ingest.combine([{"error": "boom"}])["error"] == "boom"


def test_stow_ratio_of_each_round() -> None:
    rounds = [
        {"ours": _side(200.0, 1, 1, 1), "orthanc": _side(100.0, 1, 1, 1)},
        {"ours": _side(210.0, 1, 1, 1), "orthanc": _side(0.0, 1, 1, 1)},
        {"ours": _side(150.0, 1, 1, 1), "orthanc": {"error": "did not start"}},
    ]
    assert ingest.stow_ratios(rounds) == [2.0, None, None]
    table = ingest.table(
        {"ours": ingest.combine([r["ours"] for r in rounds]), "orthanc": _side(100.0, 1, 1, 1)}
    )
    assert "STOW-RS instances/s" in table and "2.00x" in table
