"""Web console sessions in the catalogue (migration 0200): opened at sign-in, used by every
console request, deleted at sign-out.  Rows hold digests only (see the migration for why the
sessions are server-side); the session policy (lifetimes, cookies, CSRF) is :mod:`vna.ui`'s.

An OIDC sign-in (migration 0217) has no API token to resolve again, so its session keeps the
principal its ID token mapped to; the sign-ins under way (state, nonce, PKCE verifier) are
kept here too, so that the callback may reach any server process of a deployment.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from vna.catalog import audit
from vna.catalog.queries import q


@dataclass(frozen=True)
class Session:
    #: The API token signed in with; None for an OIDC user's session.
    token_sha256: str | None
    actor: str
    csrf: str
    expires_at: dt.datetime
    #: An OIDC user's subject, name shown, role and readable sources (None: every source).
    oidc_subject: str | None = None
    display_name: str | None = None
    role: str | None = None
    read_sources: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PendingSignIn:
    """An OIDC sign-in sent to the provider, as its callback finds it."""

    browser_sha256: str
    nonce: str
    code_verifier: str
    redirect_url: str
    #: False once past its lifetime (the row is gone all the same).
    live: bool


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


async def open_oidc_session(
    conn: asyncpg.Connection,
    *,
    session_sha256: str,
    actor: str,
    csrf: str,
    origin: str,
    lifetime_minutes: int,
    idle_minutes: int,
    issuer: str,
    subject: str,
    display_name: str,
    role: str,
    read_sources: tuple[str, ...] | None,
    detail: dict[str, Any],
) -> None:
    """Record an OIDC user's session and audit the sign-in (``detail`` names the subject and
    the groups that granted the role), in the caller's transaction."""
    await conn.execute(q("console_session_purge"), idle_minutes)
    await conn.execute(
        q("console_session_insert_oidc"),
        session_sha256,
        actor,
        csrf,
        origin,
        lifetime_minutes,
        issuer,
        subject,
        display_name,
        role,
        list(read_sources) if read_sources is not None else None,
    )
    await audit.record(
        conn,
        actor=actor,
        origin=origin,
        action="console-sign-in",
        detail={"console": True, "method": "oidc", **detail},
    )


async def use_session(
    conn: asyncpg.Connection, session_sha256: str, *, idle_minutes: int
) -> Session | None:
    """The live session of this digest, marked as used; None when there is none."""
    row = await conn.fetchrow(q("console_session_use"), session_sha256, idle_minutes)
    if row is None:
        return None
    readable = row["read_sources"]
    return Session(
        row["token_sha256"],
        row["actor"],
        row["csrf"],
        row["expires_at"],
        oidc_subject=row["oidc_subject"],
        display_name=row["display_name"],
        role=row["role"],
        read_sources=tuple(readable) if readable is not None else None,
    )


async def close_session(conn: asyncpg.Connection, session_sha256: str, *, origin: str) -> None:
    """Delete the session and audit the sign-out, in the caller's transaction."""
    actor = await conn.fetchval(q("console_session_delete"), session_sha256)
    if actor is not None:
        await audit.record(
            conn, actor=actor, origin=origin, action="console-sign-out", detail={"console": True}
        )


async def begin_oidc_sign_in(
    conn: asyncpg.Connection,
    *,
    state_sha256: str,
    browser_sha256: str,
    nonce: str,
    code_verifier: str,
    redirect_url: str,
    lifetime_seconds: int,
) -> None:
    """Remember a sign-in sent to the provider until its callback (or ``lifetime_seconds``)."""
    await conn.execute(
        q("console_oidc_state_insert"),
        state_sha256,
        browser_sha256,
        nonce,
        code_verifier,
        redirect_url,
        float(lifetime_seconds),
    )


async def take_oidc_sign_in(conn: asyncpg.Connection, state_sha256: str) -> PendingSignIn | None:
    """The sign-in this state began, deleted as it is read (a state is good once); None when
    no sign-in has it (never begun, or its callback already came)."""
    row = await conn.fetchrow(q("console_oidc_state_take"), state_sha256)
    if row is None:
        return None
    return PendingSignIn(
        row["browser_sha256"], row["nonce"], row["code_verifier"], row["redirect_url"], row["live"]
    )
