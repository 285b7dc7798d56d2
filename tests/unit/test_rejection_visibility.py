"""The visibility rule of IOCM rejection (migration 0160) is one predicate,
``rejection_fk IS NULL``, and every named block of the search and retrieve paths that reads
instances tests it: a new query that forgets it would serve rejected images (IHE RAD TF-3
RAD-66).  A block that reads instances without it must be named here, with the reason."""

from __future__ import annotations

import re
from pathlib import Path

from vna.catalog.search import VISIBLE

ROOT = Path(__file__).resolve().parents[2]
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_READS_INSTANCES = re.compile(r"\b(FROM|JOIN)\s+instances\b", re.IGNORECASE)

#: Blocks that read instances for something other than showing them to a reader.
NOT_READS: dict[str, str] = {
    "catalogue_totals": "archive size for metrics",
    "instances_by_sop_uids": "administration (vna patients) finds what it corrects",
    "search_instance_metadata": "by the row ids search_instances found (already filtered)",
}


def _blocks(path: Path) -> dict[str, str]:
    parts = _NAME.split(path.read_text(encoding="utf-8"))
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_search_and_retrieve_block_reading_instances_tests_visibility() -> None:
    missing = []
    for name in ("search.sql", "retrieve.sql"):
        for block, sql in _blocks(ROOT / "vna" / "catalog" / "sql" / name).items():
            if block in NOT_READS or not _READS_INSTANCES.search(sql):
                continue
            if "rejection_fk IS NULL" not in sql and "{where}" not in sql:
                missing.append(f"{name}: {block}")
    assert not missing, "blocks serving instances without the visibility rule:\n" + "\n".join(
        missing
    )


def test_search_adds_the_rule_at_every_level() -> None:
    assert set(VISIBLE) == {"study", "series", "instance"}
    assert all("rejection_fk IS NULL" in clause for clause in VISIBLE.values())
