"""Resolve a bearer token to a :class:`~vna.security.tokens.Principal`.

Three kinds of token are accepted, all of them bearer tokens:

* a source's configured ``token_sha256`` (role ``source``, actor ``token:<source>``);
* the configured ``[admin] admin_token_sha256`` (role ``admin``, actor ``admin-token``);
* a token from ``vna tokens create`` (its role, actor: its name), looked up by SHA-256 in the
  catalogue and remembered for ``http.token_cache_seconds``, so most requests cost no query.

Until any credential exists (none configured, none ever created) the archive is *open*: the
gateway serves loopback clients without a token, and says so at start-up.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections import OrderedDict

from vna.catalog.database import Database
from vna.config import Settings
from vna.errors import ConfigError
from vna.security import tokens
from vna.security.tokens import Principal

#: Distinct token digests remembered (valid and invalid alike); the oldest are forgotten.
_CACHE_SIZE = 4096


class Authenticator:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._ttl = float(settings.http.token_cache_seconds)
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._configured: list[tuple[str, Principal]] = [
            (src.token_sha256, Principal(f"token:{src.name}", "source", source=src.name))
            for src in settings.sources
            if src.token_sha256
        ]
        if settings.admin.admin_token_sha256:
            self._configured.append(
                (settings.admin.admin_token_sha256, Principal("admin-token", "admin"))
            )
        #: Once a token exists the archive stays closed: no query after that.
        self._any_token = False
        self._any_checked_at = float("-inf")

    @property
    def configured(self) -> bool:
        """Whether the configuration itself declares credentials."""
        return bool(self._configured)

    async def enforced(self) -> bool:
        """Whether requests need a credential (one is configured or was ever created)."""
        if self._configured or self._any_token:
            return True
        now = time.monotonic()
        if now - self._any_checked_at >= self._ttl:
            async with self.db.acquire() as conn:
                self._any_token = await tokens.any_token(conn)
            self._any_checked_at = now
        return self._any_token

    async def principal(self, token: str) -> Principal | None:
        """The principal a bearer token stands for; None when it stands for nobody."""
        return await self.principal_for_digest(tokens.digest(token))

    async def principal_for_digest(self, token_sha256: str) -> Principal | None:
        """The principal of the token with this SHA-256 digest (the web console keeps the
        digest of the token a session was opened with, never the token)."""
        for expected, principal in self._configured:
            if hmac.compare_digest(token_sha256, expected):
                return principal
        now = time.monotonic()
        cached = self._cache.get(token_sha256)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        async with self.db.acquire() as conn:
            found = await tokens.principal_for_digest(conn, token_sha256)
        if found is not None:
            self._any_token = True
        self._cache[token_sha256] = (now, found)
        self._cache.move_to_end(token_sha256)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return found

    def forget(self) -> None:
        """Drop what is remembered (after a revocation in this process)."""
        self._cache.clear()
        self._any_checked_at = float("-inf")


def is_loopback_host(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def check_http_exposure(authenticator: Authenticator) -> bool:
    """Refuse to serve DICOMweb beyond loopback without any credential; return whether the
    archive is open (no credential yet), for the start-up warning."""
    settings = authenticator.settings
    if await authenticator.enforced():
        return False
    if not is_loopback_host(settings.http.host) and not settings.http.allow_unauthenticated:
        raise ConfigError(
            f"refusing to serve DICOMweb on {settings.http.host} without authentication:"
            " create a token (vna tokens create NAME --role reader|source|admin) or set"
            " [http] allow_unauthenticated = true (http.host)"
        )
    return True


def check_dimse_exposure(settings: Settings) -> str:
    """The address DIMSE may listen on; refuse a non-loopback one while no sources are declared.

    Without sources every calling AE title is accepted and stored as source DEFAULT, so a port
    reachable from the network would take any sender's studies (and answer any query).  Closed
    by default, like DICOMweb without tokens; ``[dimse] allow_any_caller`` opens it on purpose.
    """
    host = settings.dimse_host
    if settings.sources or settings.dimse.allow_any_caller or is_loopback_host(host):
        return host
    raise ConfigError(
        f"refusing to listen for DIMSE on {host} with no sources declared (any caller would be"
        " accepted): declare [[sources]] with their ae_titles, or set [dimse] allow_any_caller"
        " = true (dimse.host)"
    )
