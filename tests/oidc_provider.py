"""A small OpenID Connect provider for the console's sign-in tests: an aiohttp application on a
free loopback port serving discovery, a JWKS of an RSA key made with ``cryptography`` (through
joserfc), ``/authorize`` that approves the configured test user at once and sends the browser
back with a code, and ``/token`` that checks the client, the code and its PKCE verifier and
returns a signed ID token.

Tests spoil the next ID token on purpose through :attr:`OidcProvider.spoil` (claims
overridden), :attr:`OidcProvider.sign_with` (another key: a bad signature) and
:meth:`OidcProvider.rotate` (a new key the archive has not seen yet).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import free_port

CLIENT_ID = "vna-console"
CLIENT_SECRET = "test-client-secret"


def _new_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


@dataclass
class OidcProvider:
    issuer: str = ""
    #: The user /authorize approves: claims put in every ID token.
    user: dict[str, Any] = field(
        default_factory=lambda: {"sub": "u-1001", "preferred_username": "dr.grey", "groups": []}
    )
    key: RSAKey = field(default_factory=lambda: _new_key("key-1"))
    #: Claims overriding the next ID tokens' (``{"aud": "other"}``, ``{"nonce": "x"}``).
    spoil: dict[str, Any] = field(default_factory=dict)
    #: Sign the ID tokens with this key instead of the published one.
    sign_with: RSAKey | None = None
    #: Codes issued and not yet exchanged: what /authorize was asked with.
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Every /token request's form and whether its client authenticated.
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    jwks_fetches: int = 0

    def rotate(self) -> None:
        """A new signing key, published from now on (the old one no longer)."""
        self.key = _new_key(f"key-{secrets.token_hex(4)}")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        return app

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        assert q["response_type"] == "code", q
        assert q["client_id"] == CLIENT_ID, q
        assert q["code_challenge_method"] == "S256", q
        assert "openid" in q["scope"].split(), q
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "nonce": q["nonce"],
            "challenge": q["code_challenge"],
            "redirect_uri": q["redirect_uri"],
        }
        back = urlencode({"code": code, "state": q["state"]})
        raise web.HTTPFound(f"{q['redirect_uri']}?{back}")

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        authenticated = request.headers.get("Authorization") == expected
        self.token_requests.append({"form": dict(form), "authenticated": authenticated})
        if not authenticated:
            return web.json_response({"error": "invalid_client"}, status=401)
        issued = self.codes.pop(str(form.get("code", "")), None)  # a code is good once
        if issued is None or form.get("redirect_uri") != issued["redirect_uri"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = str(form.get("code_verifier", ""))
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if challenge != issued["challenge"]:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "PKCE verification failed"},
                status=400,
            )
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": issued["nonce"],
            **self.user,
            **self.spoil,
        }
        key = self.sign_with or self.key
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, key)
        return web.json_response(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "id_token": id_token,
            }
        )


@contextlib.asynccontextmanager
async def oidc_provider() -> AsyncIterator[OidcProvider]:
    """The test provider, serving on a free loopback port."""
    provider = OidcProvider()
    runner = web.AppRunner(provider.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    provider.issuer = f"http://127.0.0.1:{port}"
    try:
        yield provider
    finally:
        await runner.cleanup()
