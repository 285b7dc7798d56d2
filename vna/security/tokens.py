"""API tokens: bearer credentials bound to a role, kept hashed in the catalogue.

Roles:

* ``source`` stores (STOW-RS) as one declared source, as a source's configured
  ``token_sha256`` does; it reads only the sources named in ``read_sources`` (none by default).
* ``reader`` searches and retrieves (QIDO-RS, WADO-RS); ``read_sources`` restricts it to the
  studies those sources sent (``studies.source``).
* ``admin`` reads everything and uses the administration endpoints (``/admin``), as the
  configured ``[admin] admin_token_sha256`` does.

A token is ``vna_`` and 43 random URL-safe characters (256 bits); only its SHA-256 is stored,
so a stolen catalogue backup holds no usable credential.  ``vna tokens create`` prints the
token once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from vna.catalog import audit
from vna.catalog.queries import q
from vna.errors import InvalidRequest, NotFound

ROLES = ("source", "reader", "admin")
TOKEN_PREFIX = "vna_"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the name the audit trail records and what it may do."""

    name: str
    #: ``source``, ``reader``, ``admin``; ``open`` when the archive has no credentials at all.
    role: str
    #: The declared source a ``source`` principal stores as.
    source: str | None = None
    #: Sources whose studies it may read; None: every source.
    read_sources: tuple[str, ...] | None = None

    @property
    def may_store(self) -> bool:
        return self.role in ("source", "open")

    @property
    def may_administer(self) -> bool:
        return self.role in ("admin", "open")

    @property
    def readable_sources(self) -> tuple[str, ...] | None:
        """The sources whose studies it may read: None for all, () for none."""
        if self.role in ("admin", "open"):
            return None
        if self.role == "source":
            return self.read_sources or ()
        return self.read_sources

    @property
    def may_read(self) -> bool:
        return self.readable_sources != ()

    def may_read_source(self, source: str) -> bool:
        allowed = self.readable_sources
        return allowed is None or source in allowed


@dataclass(frozen=True)
class NewToken:
    """A token just created: ``secret`` is shown once and never stored."""

    name: str
    role: str
    secret: str
    source: str | None
    read_sources: tuple[str, ...] | None
    expires_at: dt.datetime | None


def digest(token: str) -> str:
    """The SHA-256 hex digest a token is stored and looked up by."""
    return hashlib.sha256(token.strip().encode()).hexdigest()


def check_token_request(
    name: str,
    role: str,
    source: str | None,
    read_sources: Sequence[str] | None,
    known_sources: Sequence[str],
) -> None:
    """Refuse a token that could not work, naming the option at fault."""
    if not _NAME.match(name):
        raise InvalidRequest("token name must be 1-64 letters, digits, '_', '.' or '-'")
    if role not in ROLES:
        raise InvalidRequest(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    if role == "source":
        if not source:
            raise InvalidRequest("a source token needs --source NAME (the source it stores as)")
        if source not in known_sources:
            raise InvalidRequest(f"--source {source!r} is not a declared source")
    elif source:
        raise InvalidRequest(f"--source is for source tokens, not {role} tokens")
    if read_sources is not None:
        if role == "admin":
            raise InvalidRequest("an admin token reads every source; --read-sources is not for it")
        for name_ in read_sources:
            if name_ not in known_sources:
                raise InvalidRequest(f"--read-sources: {name_!r} is not a declared source")


async def create_token(
    conn: asyncpg.Connection,
    *,
    name: str,
    role: str,
    actor: str,
    source: str | None = None,
    read_sources: Sequence[str] | None = None,
    expires_at: dt.datetime | None = None,
    origin: str = "",
) -> NewToken:
    """Create a token and audit it, in the caller's transaction."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    readable = tuple(read_sources) if read_sources is not None else None
    try:
        await conn.fetchrow(
            q("token_insert"),
            name,
            digest(secret),
            role,
            source,
            list(readable) if readable is not None else None,
            actor,
            expires_at,
        )
    except asyncpg.UniqueViolationError as exc:
        raise InvalidRequest(
            f"a token named {name!r} exists; revoke it first or choose another name"
        ) from exc
    await audit.record(
        conn,
        actor=actor,
        origin=origin,
        action="token-create",
        detail=_describe(name, role, source, readable, expires_at),
    )
    return NewToken(name, role, secret, source, readable, expires_at)


async def revoke_token(
    conn: asyncpg.Connection, name: str, *, actor: str, origin: str = ""
) -> None:
    """Revoke the live token of this name and audit it, in the caller's transaction."""
    row = await conn.fetchrow(q("token_revoke"), name, actor)
    if row is None:
        raise NotFound(f"no live token named {name!r}")
    readable = tuple(row["read_sources"]) if row["read_sources"] is not None else None
    await audit.record(
        conn,
        actor=actor,
        origin=origin,
        action="token-revoke",
        detail=_describe(name, row["role"], row["source"], readable, None),
    )


async def list_tokens(conn: asyncpg.Connection, *, include_revoked: bool) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q("token_list"), include_revoked)]


async def principal_for_digest(conn: asyncpg.Connection, token_sha256: str) -> Principal | None:
    row = await conn.fetchrow(q("token_by_digest"), token_sha256)
    if row is None:
        return None
    readable = tuple(row["read_sources"]) if row["read_sources"] is not None else None
    return Principal(row["name"], row["role"], row["source"], readable)


async def any_token(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(q("token_any")))


def _describe(
    name: str,
    role: str,
    source: str | None,
    read_sources: tuple[str, ...] | None,
    expires_at: dt.datetime | None,
) -> dict[str, Any]:
    detail: dict[str, Any] = {"token": name, "role": role}
    if source:
        detail["source"] = source
    if read_sources is not None:
        detail["read_sources"] = list(read_sources)
    if expires_at is not None:
        detail["expires_at"] = expires_at.isoformat()
    return detail
