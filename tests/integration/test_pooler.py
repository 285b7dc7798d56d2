"""The catalogue behind a transaction-mode connection pooler (issue 21, item 6): PgBouncer in
``pool_mode = transaction`` in front of the test's PostgreSQL, with few server connections so
that consecutive statements of one client land on different ones.

With ``database_statement_cache_size = 0`` the archive migrates (two servers at once), ingests,
searches and runs its lifecycle scheduler through it, and leaves no advisory lock held on a
server connection (a session lock taken on one server connection and "released" on another
would block every later start).  PgBouncer before 1.21 does not track prepared statements; the
Debian package is 1.18.  Skipped when pgbouncer is not installed (``apt-get install pgbouncer``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import asyncpg
import pytest

from lifecycle.worker import run_once
from tests.conftest import free_port, with_database
from tests.factory import ct_study
from tests.integration.lifecycle_support import fetch, ingest, opened
from vna.catalog.migrate import available, migrate
from vna.config import Settings

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed"),
]


@pytest.fixture
def pooler(pg_admin_url: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of the test server; yields its URL with the
    database name left to the caller (``with_database``)."""
    parts = urlparse(pg_admin_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    user = unquote(parts.username or "postgres")
    password = unquote(parts.password or "")
    root = Path(tempfile.mkdtemp(prefix="vna-pooler-"))
    root.chmod(0o777)  # PgBouncer runs as another user than root (it refuses root)
    port = free_port()
    server = f"host={host} port={parts.port or 5432} user={user}"
    if password:
        server += f" password={password}"
    ini = root / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = {server}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {root}/users.txt\n"
        "pool_mode = transaction\n"
        "default_pool_size = 3\n"
        "max_client_conn = 200\n"
        f"logfile = {root}/pgbouncer.log\n"
    )
    (root / "users.txt").write_text(f'"{user}" ""\n')
    for path in (ini, root / "users.txt"):
        path.chmod(0o644)
    args = [PGBOUNCER or "pgbouncer"]
    if os.geteuid() == 0:
        # The owner of the server's socket directory can reach it; over TCP anyone can.
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name if host.startswith("/") else "nobody"
        args += ["-u", owner]
    proc = subprocess.Popen([*args, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"pgbouncer exited: {(root / 'pgbouncer.log').read_text()[-2000:]}")
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


async def _server(url: str, statement: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(statement)
    finally:
        await conn.close()


async def test_the_archive_works_through_a_transaction_mode_pooler(
    pooler: str, pg_admin_url: str, tmp_path: Path
) -> None:
    name = f"vna_pooled_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    await _server(pg_admin_url, f'CREATE DATABASE "{name}"')
    direct = with_database(pg_admin_url, name)
    pooled = with_database(pooler, name)
    try:
        # Two servers starting at once on the empty database, through the pooler.
        conns = [await asyncpg.connect(pooled, statement_cache_size=0) for _ in range(2)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in conns))
        finally:
            for c in conns:
                await c.close()
        applied = sorted(n for r in results for n in r)
        assert applied == sorted(f"{v:04d}_{n}" for v, n, _ in available())
        advisory = "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"
        assert (await _server(direct, advisory))[0]["n"] == 0

        # Ingest, search and the lifecycle scheduler (two workers' passes at once).
        settings = Settings(
            data_dir=tmp_path / "data", database_url=pooled, database_statement_cache_size=0
        )
        async with opened(settings) as a, opened(dataclasses.replace(settings)) as b:
            study = ct_study(series=2, slices=3, size=32)
            await ingest(a, study)
            await ingest(b, study)  # resent through the other node: a duplicate
            rows = await fetch(a, "SELECT count(*) AS n FROM instances")
            assert rows[0]["n"] == 6
            found = await b.retriever.find(str(study[0].StudyInstanceUID))
            assert len(found) == 6
            summaries = await asyncio.gather(run_once(a), run_once(b))
            assert sum(s.done.get("instance-stored", 0) for s in summaries) == 6
            ticks = [t for s in summaries for t in s.ticks]
            assert any(t.ran for t in ticks)
            # No scheduler lock left behind: the next pass runs.
            again = await run_once(a)
            assert again.ticks and again.ticks[0].ran
        assert (await _server(direct, advisory))[0]["n"] == 0
    finally:
        await _server(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
