"""Web console sessions in the catalogue (migration 0200): opened at sign-in, used by every
console request, deleted at sign-out.  Rows hold digests only (see the migration for why the
sessions are server-side); the session policy (lifetimes, cookies, CSRF) is :mod:`vna.ui`'s.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from vna.catalog import audit
from vna.catalog.queries import q


@dataclass(frozen=True)
class Session:
    token_sha256: str
    actor: str
    csrf: str
    expires_at: dt.datetime


async def open_session(
    conn: asyncpg.Connection,
    *,
    session_sha256: str,
    token_sha256: str,
    actor: str,
    csrf: str,
    origin: str,
    lifetime_minutes: int,
    idle_minutes: int,
) -> None:
    """Record a new session and audit the sign-in, in the caller's transaction."""
    await conn.execute(q("console_session_purge"), idle_minutes)
    await conn.execute(
        q("console_session_insert"),
        session_sha256,
        token_sha256,
        actor,
        csrf,
        origin,
        lifetime_minutes,
    )
    await audit.record(
        conn, actor=actor, origin=origin, action="console-sign-in", detail={"console": True}
    )


async def use_session(
    conn: asyncpg.Connection, session_sha256: str, *, idle_minutes: int
) -> Session | None:
    """The live session of this digest, marked as used; None when there is none."""
    row = await conn.fetchrow(q("console_session_use"), session_sha256, idle_minutes)
    if row is None:
        return None
    return Session(row["token_sha256"], row["actor"], row["csrf"], row["expires_at"])


async def close_session(conn: asyncpg.Connection, session_sha256: str, *, origin: str) -> None:
    """Delete the session and audit the sign-out, in the caller's transaction."""
    actor = await conn.fetchval(q("console_session_delete"), session_sha256)
    if actor is not None:
        await audit.record(
            conn, actor=actor, origin=origin, action="console-sign-out", detail={"console": True}
        )
