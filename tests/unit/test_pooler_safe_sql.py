"""The archive's SQL is safe behind a transaction-mode pooler (PgBouncer, RDS Proxy; see
docs/scaling.md): no session-level advisory lock, whose unlock the pooler may send to another
server connection than the lock (leaving it held for ever), and no LISTEN or session SET, which
would pin or be lost.  Transaction-scoped forms (``pg_advisory_xact_lock``, ``SET LOCAL``) are
what the archive uses instead."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_SESSION_STATE = re.compile(
    # A statement (not an UPDATE's SET clause) that sets a session parameter.
    r"\bpg_(try_)?advisory_lock(_shared)?\s*\(|\bpg_advisory_unlock|\bLISTEN\b"
    r"|(?:\A|;)\s*SET\s+(?!LOCAL\b)(?!CONSTRAINTS\b)",
    re.IGNORECASE,
)


def _statements() -> list[tuple[str, str]]:
    out = []
    for directory in ("vna/catalog/sql", "lifecycle/sql"):
        for path in sorted((ROOT / directory).glob("*.sql")):
            text = path.read_text(encoding="utf-8")
            for block in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]:
                name, _, body = block.partition("\n")
                code = "\n".join(line.split("--")[0] for line in body.splitlines())
                out.append((f"{path.name}:{name.strip()}", code))
    return out


def test_no_session_state_in_named_sql() -> None:
    assert _statements(), "no named SQL blocks found"
    offending = [name for name, code in _statements() if _SESSION_STATE.search(code)]
    assert offending == []


def test_the_check_finds_session_locks() -> None:
    assert _SESSION_STATE.search("SELECT pg_try_advisory_lock($1);")
    assert _SESSION_STATE.search("SELECT pg_advisory_unlock($1);")
    assert not _SESSION_STATE.search("SELECT pg_advisory_xact_lock($1);")
    assert not _SESSION_STATE.search("SELECT pg_try_advisory_xact_lock($1);")
    assert _SESSION_STATE.search("SET statement_timeout = 0;")
    assert not _SESSION_STATE.search("UPDATE jobs\nSET state = 'done'\nWHERE id = $1;")
