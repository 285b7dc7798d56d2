"""OpenID Connect sign-in for the web console: the authorization code flow with PKCE
(OpenID Connect Core 1.0 section 3.1, RFC 7636 with S256), ``state`` and ``nonce``.

The provider is found through its discovery document (OpenID Connect Discovery 1.0 section
4: ``{issuer}/.well-known/openid-configuration``), the code is exchanged at its token
endpoint over verified TLS (``[oidc] ca_file`` or the system's trust store), and the ID token
is checked as Core 3.1.3.7 says: signature against the provider's JWKS (RS256 or ES256 only,
so never ``none`` or an HMAC keyed with a public key), ``iss``, ``aud`` (and ``azp`` when
there are several audiences), ``exp`` and ``iat`` with ``[oidc] leeway_seconds``, ``nonce``.
JOSE itself is joserfc's.

What the user may then do is :mod:`vna.security.oidc_roles`'s (pure); sessions and pages are
:mod:`vna.ui`'s.  Failures a user can act on are :class:`~vna.errors.SignInRefused` with the
reason; a provider that cannot be reached is
:class:`~vna.errors.IdentityProviderUnavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import aiohttp
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
)
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from vna.config import OidcSettings
from vna.errors import IdentityProviderUnavailable, SignInRefused
from vna.security.tls import client_context

DISCOVERY_PATH = "/.well-known/openid-configuration"
#: Signature algorithms accepted on an ID token: the asymmetric ones providers use.  Never
#: ``none``, and never HS256, whose key would be the client secret (or a public key mistaken
#: for one).
ALGORITHMS = ("RS256", "ES256")
#: How long the discovery document is trusted before it is read again.
DISCOVERY_SECONDS = 3600
#: An ID token naming a key the cached JWKS lacks makes the keys be fetched again (the
#: provider rotated them), but not more often than this: made-up key IDs must not make the
#: archive hammer the provider.
JWKS_REFETCH_SECONDS = 10.0
#: Seconds for each request to the provider.
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Provider:
    """The parts of the discovery document the code flow uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(frozen=True)
class Authorization:
    """A sign-in to send the browser to: ``url`` at the provider, and what the callback must
    find again (kept server-side until then)."""

    url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in: its validated ID token claims."""

    issuer: str
    subject: str
    claims: Mapping[str, Any]


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 4.2)."""
    sha = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(sha).rstrip(b"=").decode()


class OidcClient:
    """One provider's discovery document, keys and endpoints; one per console."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._provider: Provider | None = None
        self._provider_at = float("-inf")
        self._keys: KeySet | None = None
        #: When an unknown key ID last made the keys be fetched again.
        self._refetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- the flow ---------------------------------------------------------------------------

    async def authorization(self, redirect_url: str) -> Authorization:
        """A new authorization request (fresh state, nonce and PKCE verifier, each 256 bits)."""
        provider = await self.provider()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)  # 64 characters, within RFC 7636's 43-128
        scopes = dict.fromkeys(("openid", *self.settings.scopes))
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_url,
                "scope": " ".join(scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        joiner = "&" if urlsplit(provider.authorization_endpoint).query else "?"
        return Authorization(
            f"{provider.authorization_endpoint}{joiner}{query}", state, nonce, verifier
        )

    async def sign_in(
        self, *, code: str, code_verifier: str, redirect_url: str, nonce: str
    ) -> Identity:
        """Exchange the code at the token endpoint and validate the ID token it returns."""
        provider = await self.provider()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_url,
            "code_verifier": code_verifier,
        }
        auth = None
        if self.settings.client_secret:
            # client_secret_basic, the default method (Core 9); the parts are form-encoded
            # first (RFC 6749 2.3.1).
            pair = (
                f"{quote_plus(self.settings.client_id)}:{quote_plus(self.settings.client_secret)}"
            )
            auth = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.settings.client_id  # a public client: PKCE alone
        answer = await self._post_form(provider.token_endpoint, form, auth)
        id_token = answer.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise SignInRefused("the provider's token response has no ID token")
        claims = await self.validate(id_token, nonce=nonce, provider=provider)
        return Identity(provider.issuer, str(claims["sub"]), claims)

    async def validate(
        self, id_token: str, *, nonce: str, provider: Provider | None = None
    ) -> dict[str, Any]:
        """The claims of an ID token that passes every check of Core 3.1.3.7; SignInRefused
        naming the first that fails."""
        provider = provider or await self.provider()
        keys = await self._jwks(provider, refresh=False)
        try:
            try:
                token = jwt.decode(id_token, keys, algorithms=list(ALGORITHMS))
            except InvalidKeyIdError:
                # A key we do not know yet: the provider may have rotated its keys.
                keys = await self._jwks(provider, refresh=True)
                token = jwt.decode(id_token, keys, algorithms=list(ALGORITHMS))
        except InvalidKeyIdError as exc:
            raise SignInRefused(
                "the ID token is signed with a key the provider does not publish"
            ) from exc
        except BadSignatureError as exc:
            raise SignInRefused(
                "the ID token's signature does not verify with the provider's keys"
            ) from exc
        except JoseError as exc:
            raise SignInRefused(f"the ID token cannot be read: {exc.error}") from exc
        claims: dict[str, Any] = dict(token.claims)
        self._check_claims(claims, provider, nonce)
        return claims

    def _check_claims(self, claims: dict[str, Any], provider: Provider, nonce: str) -> None:
        if claims.get("iss") != provider.issuer:
            raise SignInRefused(f"the ID token's issuer is not {provider.issuer}")
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or self.settings.client_id not in audiences:
            raise SignInRefused("the ID token is not meant for this archive (audience)")
        # Several audiences: the one it was issued to must be us (Core 3.1.3.7, 4 and 5).
        if len(audiences) > 1 and claims.get("azp") != self.settings.client_id:
            raise SignInRefused("the ID token was issued to another client (azp)")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise SignInRefused("the ID token names no subject")
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise SignInRefused("the ID token's nonce is not this sign-in's (a replayed token?)")
        registry = JWTClaimsRegistry(
            leeway=self.settings.leeway_seconds, exp={"essential": True}, iat={"essential": True}
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise SignInRefused("the ID token has expired") from exc
        except JoseError as exc:
            raise SignInRefused(f"the ID token's times are not valid: {exc.description}") from exc

    # --- the provider -----------------------------------------------------------------------

    async def provider(self) -> Provider:
        """The discovery document, read at most every DISCOVERY_SECONDS."""
        async with self._lock:
            now = time.monotonic()
            if self._provider is None or now - self._provider_at >= DISCOVERY_SECONDS:
                self._provider = await self._discover()
                self._provider_at = now
            return self._provider

    async def _discover(self) -> Provider:
        issuer = self.settings.issuer
        url = issuer.rstrip("/") + DISCOVERY_PATH
        doc = await self._get_json(url)
        # The document must be the configured issuer's (Discovery 4.3): the ID token's iss
        # is then checked against it.
        if str(doc.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
            raise IdentityProviderUnavailable(
                f"the OIDC discovery document at {url} names another issuer"
                f" ({doc.get('issuer')!r}); check [oidc] issuer"
            )
        fields = ("authorization_endpoint", "token_endpoint", "jwks_uri")
        missing = [f for f in fields if not isinstance(doc.get(f), str) or not doc[f]]
        if missing:
            raise IdentityProviderUnavailable(
                f"the OIDC discovery document at {url} lacks {', '.join(missing)}"
            )
        return Provider(
            str(doc["issuer"]),
            str(doc["authorization_endpoint"]),
            str(doc["token_endpoint"]),
            str(doc["jwks_uri"]),
        )

    async def _jwks(self, provider: Provider, *, refresh: bool) -> KeySet:
        async with self._lock:
            now = time.monotonic()
            stale = refresh and now - self._refetched_at >= JWKS_REFETCH_SECONDS
            if stale:
                self._refetched_at = now
            if self._keys is None or stale:
                doc = await self._get_json(provider.jwks_uri)
                try:
                    # Keys of other types or uses (encryption keys) are left out, not fatal.
                    usable = [
                        k
                        for k in doc.get("keys", [])
                        if isinstance(k, dict)
                        and k.get("kty") in ("RSA", "EC")
                        and k.get("use", "sig") == "sig"
                    ]
                    self._keys = KeySet.import_key_set({"keys": usable})
                except (JoseError, ValueError, TypeError) as exc:
                    raise IdentityProviderUnavailable(
                        f"the provider's keys at {provider.jwks_uri} cannot be read: {exc}"
                    ) from exc
            return self._keys

    # --- HTTP -------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            # TLS verified against [oidc] ca_file or the system's trust store, as for the
            # other outbound HTTPS of the archive (forwarding, notifications).
            tls = client_context("oidc.ca_file", self.settings.ca_file)
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls),
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
            )
        return self._http

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._session().get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise IdentityProviderUnavailable(
                        f"the OIDC provider answered {resp.status} at {url}"
                    )
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdentityProviderUnavailable(
                f"the OIDC provider cannot be reached at {url}: {exc or type(exc).__name__}"
            ) from exc
        if not isinstance(doc, dict):
            raise IdentityProviderUnavailable(f"the OIDC provider's answer at {url} is not JSON")
        return doc

    async def _post_form(
        self, url: str, form: dict[str, str], authorization: str | None
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        try:
            async with self._session().post(url, data=form, headers=headers) as resp:
                status = resp.status
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdentityProviderUnavailable(
                f"the OIDC token endpoint cannot be reached at {url}: {exc or type(exc).__name__}"
            ) from exc
        if not isinstance(doc, dict):
            raise IdentityProviderUnavailable("the OIDC token endpoint's answer is not JSON")
        if status != 200:
            # RFC 6749 5.2: an error code (invalid_grant: the code was used or has expired).
            error = str(doc.get("error", status))
            described = doc.get("error_description")
            raise SignInRefused(
                f"the provider refused the sign-in code ({error}"
                + (f": {described}" if described else "")
                + ")"
            )
        return doc
