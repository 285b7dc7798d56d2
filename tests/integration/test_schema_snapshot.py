"""schema/catalogue.sql is the schema the migrations produce: the current body of
every SQL function and every table, readable in one place without replaying the migrations."""

from __future__ import annotations

import asyncpg

from vna.catalog.schema import REFRESH, SNAPSHOT, describe, difference


async def test_snapshot_matches_a_freshly_migrated_database(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        current = await describe(conn)
    finally:
        await conn.close()
    diff = difference(current, SNAPSHOT.read_text(encoding="utf-8"))
    assert not diff, f"{SNAPSHOT.name} is out of date; refresh it with: {REFRESH}\n{diff}"


async def test_a_changed_function_body_or_column_shows_in_the_diff(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("ALTER TABLE audit ADD COLUMN reviewed_by text")
        await conn.execute(
            "CREATE FUNCTION vna_probe() RETURNS integer LANGUAGE sql AS $$ SELECT 41 + 1 $$"
        )
        current = await describe(conn)
    finally:
        await conn.close()
    diff = difference(current, SNAPSHOT.read_text(encoding="utf-8"))
    added = [line for line in diff.splitlines() if line.startswith("+") and "+++" not in line]
    assert "+    reviewed_by text," in added
    assert any("SELECT 41 + 1" in line for line in added)
