"""The catalogue's current schema in one file: every table, constraint, index, trigger and SQL
function as the migrations leave them (``schema/catalogue.sql`` at the top of the repository,
committed).

The migrations are the history; this file is the present.  A PL/pgSQL function redefined by a
later migration has one current body, and this is where to read it.  A test rebuilds the
listing from a freshly migrated database and fails with a diff when the two differ; refresh it
after adding a migration with::

    .venv/bin/python -m vna.catalog.schema --write

The listing is built by queries over the system catalogues (``pg_get_functiondef``,
``pg_get_indexdef`` ...), not by ``pg_dump``, so that it does not depend on a client binary
matching the server's version.  Its statements are valid DDL, in a stable order.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import shutil
import sys
import tempfile
from pathlib import Path

import asyncpg

from vna.catalog.queries import q

# A generated reference for the people changing the schema, kept beside the code rather than in
# the package: it restates the migrations' DDL by design, and nothing loads it at run time.
SNAPSHOT = Path(__file__).resolve().parents[2] / "schema" / "catalogue.sql"
REFRESH = ".venv/bin/python -m vna.catalog.schema --write"
_HEADER = f"""\
-- The catalogue schema as the migrations leave it: generated, do not edit.
-- Refresh after adding a migration: {REFRESH}
-- (vna/catalog/schema.py; a test compares it with a freshly migrated database.)
"""


async def describe(conn: asyncpg.Connection) -> str:
    """The schema of the connected database as DDL text, in a stable order."""
    out = [_HEADER]
    migrations = [
        f"{r['version']:04d}_{r['name']}" for r in await conn.fetch(q("schema_migrations"))
    ]
    out.append("\n".join(["-- Migrations applied:", *(f"--   {m}" for m in migrations)]) + "\n")
    columns: dict[str, list[str]] = {}
    for r in await conn.fetch(q("schema_columns")):
        line = f"    {r['column_name']} {r['data_type']}"
        if r["not_null"]:
            line += " NOT NULL"
        if r["default_value"] is not None:
            line += f" DEFAULT {r['default_value']}"
        if r["identity"]:
            line += f" GENERATED {r['identity']} AS IDENTITY"
        if r["generated"] is not None:
            line += f" GENERATED ALWAYS AS ({r['generated']}) STORED"
        columns.setdefault(r["table_name"], []).append(line)
    constraints: dict[str, list[str]] = {}
    for r in await conn.fetch(q("schema_constraints")):
        constraints.setdefault(r["table_name"], []).append(
            f"    CONSTRAINT {r['name']} {r['definition']}"
        )
    for table in sorted(columns):
        body = ",\n".join([*columns[table], *constraints.get(table, [])])
        out.append(f"CREATE TABLE {table} (\n{body}\n);\n")
    for r in await conn.fetch(q("schema_indexes")):
        out.append(f"{r['definition']};\n")
    for r in await conn.fetch(q("schema_views")):
        out.append(f"CREATE VIEW {r['name']} AS\n{r['definition'].strip()}\n")
    for r in await conn.fetch(q("schema_functions")):
        out.append(f"{r['definition'].strip()};\n")
    for r in await conn.fetch(q("schema_triggers")):
        out.append(f"{r['definition']};\n")
    return "\n".join(out)


def difference(current: str, committed: str) -> str:
    """A unified diff from the committed snapshot to the schema as migrated (empty if equal)."""
    return "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            current.splitlines(keepends=True),
            fromfile=f"{SNAPSHOT.name} (committed)",
            tofile="schema after the migrations",
        )
    )


async def _generate() -> str:
    """Migrate a scratch database on a throw-away embedded server and describe it."""
    from vna.catalog.database import EmbeddedPostgres
    from vna.catalog.migrate import migrate

    root = Path(tempfile.mkdtemp(prefix="vna-schema-"))
    server = EmbeddedPostgres(root / "data", database="vna_schema")
    try:
        url = await asyncio.to_thread(server.start)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            return await describe(conn)
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vna.catalog.schema",
        description="Compare (or with --write, refresh) schema/catalogue.sql with"
        " the schema a fresh database has after every migration.",
    )
    parser.add_argument("--write", action="store_true", help="rewrite the snapshot file")
    args = parser.parse_args(argv)
    current = asyncio.run(_generate())
    if args.write:
        SNAPSHOT.write_text(current, encoding="utf-8")
        print(f"wrote {SNAPSHOT}")
        return 0
    diff = difference(current, SNAPSHOT.read_text(encoding="utf-8"))
    if diff:
        sys.stdout.write(diff)
        print(f"the snapshot is out of date; refresh it with: {REFRESH}", file=sys.stderr)
        return 1
    print("the snapshot matches the migrations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
