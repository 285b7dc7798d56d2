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
    """Apply pending migrations; return the names applied.

    Each migration runs in its own transaction (one that fails leaves the earlier ones
    applied), under a transaction-scoped advisory lock, and is looked up again under it: of
    several servers starting at once, each migration is applied by one of them, in order (a
    server reaches a migration only once every earlier one is recorded).  A session lock would
    not do behind a transaction-mode pooler (PgBouncer, RDS Proxy), which may run the unlock on
    another server connection than the lock, leaving it held for ever.
    """
    applied_now: list[str] = []
    with translate_errors("migration"):
        known = await _applied(conn)
        if known is None:
            async with conn.transaction():
                await conn.execute(q("migrations_lock"), _LOCK_ID)
                await conn.execute(q("migrations_table"))
            known = set()
        for version, name, path in available():
            if version in known:
                continue  # the usual start: nothing to do, no lock taken
            async with conn.transaction():
                await conn.execute(q("migrations_lock"), _LOCK_ID)
                if await conn.fetchval(q("migration_is_applied"), version):
                    continue  # another server applied it while this one waited
                await conn.execute(path.read_text(encoding="utf-8"))
                await conn.execute(q("migration_record"), version, name)
            log.info("applied migration %04d_%s", version, name)
            applied_now.append(f"{version:04d}_{name}")
    return applied_now


async def _applied(conn: asyncpg.Connection) -> set[int] | None:
    """Versions recorded, or None before the first migration made the table."""
    if not await conn.fetchval(q("migrations_table_exists")):
        return None
    return {r["version"] for r in await conn.fetch(q("migrations_applied"))}
