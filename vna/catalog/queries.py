"""Named SQL blocks loaded once from ``vna/catalog/sql/*.sql`` (procrastinate's style).

A block starts with ``-- name: NAME`` and runs to the next such line.  Other packages
(``lifecycle``) can register their own directory of blocks.
"""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_queries: dict[str, str] = {}


def load_directory(directory: Path) -> None:
    for path in sorted(directory.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        parts = _NAME.split(text)
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in _queries:
                raise RuntimeError(f"SQL block {name!r} defined twice ({path.name})")
            _queries[name] = body.strip().rstrip(";")


def q(name: str) -> str:
    """The SQL of the named block."""
    return _queries[name]


load_directory(Path(__file__).parent / "sql")
