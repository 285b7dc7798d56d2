"""Audit rows have one writer (vna/catalog/audit.py): no other module names the audit
table's insert blocks or inserts into it, so every row has the same shape and one place to
change when the table does."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRITER = ROOT / "vna" / "catalog" / "audit.py"
WRITER_SQL = ROOT / "vna" / "catalog" / "sql" / "audit.sql"
_BLOCKS = re.compile(r"""q\(\s*["'](record_audit|record_access|record_security_event)["']""")
_INSERT = re.compile(r"INSERT\s+INTO\s+audit\b", re.IGNORECASE)


def _sources() -> list[Path]:
    files: list[Path] = []
    for package in ("vna", "lifecycle"):
        files += (ROOT / package).rglob("*.py")
        files += (ROOT / package).rglob("*.sql")
    # The migrations' filing functions write store rows in the same statement, for ingest's
    # cost (see vna/catalog/audit.py); the schema snapshot lists their bodies.
    return [f for f in files if "migrations" not in f.parts and f.name != "catalogue.sql"]


def test_only_the_audit_module_writes_audit_rows() -> None:
    offenders = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        if path != WRITER and _BLOCKS.search(text):
            offenders.append(f"{path.relative_to(ROOT)} uses an audit insert block")
        if path != WRITER_SQL and _INSERT.search(text):
            offenders.append(f"{path.relative_to(ROOT)} inserts into audit")
    assert not offenders, "audit rows are written by vna/catalog/audit.py only:\n" + "\n".join(
        offenders
    )


def test_nothing_imports_ingest_to_audit() -> None:
    for path in (ROOT / "vna" / "security").rglob("*.py"):
        assert "vna.ingest" not in path.read_text(encoding="utf-8"), path
