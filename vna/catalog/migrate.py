"""Numbered schema migrations (``migrations/NNNN_name.sql``), applied in order, once each."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import asyncpg

from vna.catalog.database import translate_errors
from vna.catalog.queries import q

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any fixed number: serialises concurrent migrators (several servers starting at once).
_LOCK_ID = 0x564E41


def available() -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _FILE.match(path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path))
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError("two migration files share a number")
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; return the names applied."""
    applied_now: list[str] = []
    with translate_errors("migration"):
        await conn.execute(q("migrations_lock"), _LOCK_ID)
        try:
            await conn.execute(q("migrations_table"))
            done = {r["version"] for r in await conn.fetch(q("migrations_applied"))}
            for version, name, path in available():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text(encoding="utf-8"))
                    await conn.execute(q("migration_record"), version, name)
                log.info("applied migration %04d_%s", version, name)
                applied_now.append(f"{version:04d}_{name}")
        finally:
            await conn.execute(q("migrations_unlock"), _LOCK_ID)
    return applied_now
