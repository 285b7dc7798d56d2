"""Console sign-in through an OpenID Connect provider (a real one written for the test,
tests/oidc_provider.py): what a user's groups let them see and do is what an API token of
the same role and sources may (admin pages for admins only, a reader of HOSP1 sees HOSP1's
studies only); ID tokens that fail a check, replayed or foreign callbacks and users in no
mapped group are refused with the reason and no session; every sign-in, refusal and sign-out
is audited under the OIDC subject.  Token sign-in is unchanged (test_console_framework)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest

from tests.console_support import ConsoleSite, console_site, csrf_of, page_csrf, signed_in
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, _new_key, oidc_provider
from vna.config import OidcGroupSettings, OidcSettings, Settings
from vna.security.audit import AuditFilter, search

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def idp() -> AsyncIterator[OidcProvider]:
    async with oidc_provider() as provider:
        yield provider


@pytest.fixture
async def site(archive_settings: Settings, idp: OidcProvider) -> AsyncIterator[ConsoleSite]:
    oidc = OidcSettings(
        issuer=idp.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        provider_name="Hospital SSO",
        groups=(
            OidcGroupSettings("vna-admins", "admin"),
            OidcGroupSettings("radiology-hosp1", "reader", ("HOSP1",)),
        ),
    )
    async with console_site(dataclasses.replace(archive_settings, oidc=oidc)) as running:
        yield running


def browser() -> aiohttp.ClientSession:
    # unsafe: keep cookies of an IP address host (127.0.0.1), which aiohttp drops by default.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def to_callback(site: ConsoleSite, http: aiohttp.ClientSession) -> str:
    """Press the button and let the provider approve: the callback URL it sends back."""
    async with http.get(f"{site.ui}/oidc/start", allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        authorize = resp.headers["Location"]
    async with http.get(authorize, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        return resp.headers["Location"]


async def sso(site: ConsoleSite, http: aiohttp.ClientSession) -> tuple[int, str]:
    """A whole sign-in through the provider: the callback's status and page."""
    callback = await to_callback(site, http)
    async with http.get(callback, allow_redirects=False) as resp:
        return resp.status, await resp.text()


def has_session(http: aiohttp.ClientSession) -> bool:
    return any(c.key == "vna_console" and c.value for c in http.cookie_jar)


async def sessions(site: ConsoleSite) -> list[dict[str, Any]]:
    async with site.archive.db.acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM console_sessions")]


async def audit_rows(site: ConsoleSite, action: str) -> list[dict[str, Any]]:
    async with site.archive.db.acquire() as conn:
        return await search(conn, AuditFilter(action=action))


async def test_without_oidc_there_is_no_button_and_no_route(archive_settings: Settings) -> None:
    async with console_site(archive_settings) as plain, browser() as http:
        async with http.get(f"{plain.ui}/signin") as resp:
            html = await resp.text()
        assert "Sign in with" not in html and 'type="password"' in html
        for path in ("/oidc/start", "/oidc/callback?state=x&code=y"):
            async with http.get(f"{plain.ui}{path}", allow_redirects=False) as resp:
                assert resp.status == 404, path


async def test_an_admin_group_reaches_admin_pages_and_sign_out_ends_the_session(
    site: ConsoleSite, idp: OidcProvider
) -> None:
    idp.user = {"sub": "u-1001", "preferred_username": "dr.grey", "groups": ["vna-admins", "x"]}
    async with browser() as http:
        async with http.get(f"{site.ui}/signin") as resp:
            html = await resp.text()
        # Beside the token form, a plain link: keyboard-reachable, no script.
        assert 'href="/ui/oidc/start">Sign in with Hospital SSO</a>' in html
        assert 'type="password"' in html
        status, html = await sso(site, http)
        assert status == 200, html
        # The session cookie is SameSite=Strict: the page moves on by itself (no script).
        assert '<meta http-equiv="refresh" content="0; url=/ui/">' in html
        assert has_session(http)
        # The PKCE verifier went to the token endpoint with the client's credentials.
        (request,) = idp.token_requests
        assert request["authenticated"] and len(request["form"]["code_verifier"]) >= 43
        for path in ("/studies", "/patients", "/conflicts", "/audit"):
            async with http.get(f"{site.ui}{path}", allow_redirects=False) as resp:
                assert resp.status == 200, path
                page = await resp.text()
        assert "dr.grey" in page and "(admin)" in page
        (row,) = await sessions(site)
        assert row["token_sha256"] is None and row["role"] == "admin"
        assert row["oidc_subject"] == "u-1001" and row["actor"] == "oidc:u-1001"
        csrf = await page_csrf(http, f"{site.ui}/studies")
        async with http.post(
            f"{site.ui}/signout", data={"csrf": csrf}, allow_redirects=False
        ) as resp:
            assert resp.status == 303
        async with http.get(f"{site.ui}/studies", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/ui/signin"
    assert await sessions(site) == []
    (signin,) = await audit_rows(site, "console-sign-in")
    assert signin["actor"] == "oidc:u-1001"
    assert signin["detail"]["subject"] == "u-1001" and signin["detail"]["method"] == "oidc"
    assert signin["detail"]["groups"] == ["vna-admins"] and signin["detail"]["role"] == "admin"
    (signout,) = await audit_rows(site, "console-sign-out")
    assert signout["actor"] == "oidc:u-1001"


async def test_a_reader_group_sees_its_sources_studies_only(
    site: ConsoleSite, idp: OidcProvider
) -> None:
    idp.user = {"sub": "u-2002", "preferred_username": "tech.h1", "groups": ["radiology-hosp1"]}
    hosp1, hosp2 = site.studies["HOSP1"][0], site.studies["HOSP2"][0]
    async with browser() as http:
        status, html = await sso(site, http)
        assert status == 200, html
        csrf = await page_csrf(http, f"{site.ui}/studies")
        for data in ({}, {"source": "HOSP2"}, {"patient_id": "P2"}):
            async with http.post(f"{site.ui}/studies", data={"csrf": csrf, **data}) as resp:
                html = await resp.text()
            assert resp.status == 200
            assert hosp2 not in html and "ROE" not in html, data
        async with http.post(f"{site.ui}/studies", data={"csrf": csrf}) as resp:
            assert hosp1 in await resp.text()
        async with http.get(f"{site.ui}/studies/{hosp2}", allow_redirects=False) as resp:
            assert resp.status in (403, 404)
        async with http.get(f"{site.ui}/studies") as resp:
            html = await resp.text()
        assert ">Patients<" not in html and "(reader)" in html
        for path in ("/patients", "/conflicts", "/audit", "/tokens"):
            async with http.get(f"{site.ui}{path}", allow_redirects=False) as resp:
                assert resp.status == 403, path
        async with http.post(
            f"{site.ui}/conflicts/1/resolve", data={"csrf": csrf, "action": "discard"}
        ) as resp:
            assert resp.status == 403
    searches = [
        r for r in await audit_rows(site, "query") if r["detail"].get("protocol") == "console"
    ]
    assert searches and {r["actor"] for r in searches} == {"oidc:u-2002"}
    denied = [r for r in await audit_rows(site, "access-denied") if r["actor"] == "oidc:u-2002"]
    assert len(denied) >= 4


async def test_id_tokens_failing_a_check_are_refused_with_the_reason(
    site: ConsoleSite, idp: OidcProvider
) -> None:
    idp.user = {"sub": "u-1001", "preferred_username": "dr.grey", "groups": ["vna-admins"]}
    long_ago = int(time.time()) - 3600
    cases: list[tuple[str, dict[str, Any], bool]] = [
        ("signature does not verify", {}, True),
        ("not meant for this archive", {"aud": "another-app"}, False),
        ("nonce is not this sign-in's", {"nonce": "a-nonce-of-another-sign-in"}, False),
        ("has expired", {"iat": long_ago, "exp": long_ago + 300}, False),
        ("issuer is not", {"iss": "https://evil.example"}, False),
    ]
    for reason, spoil, other_key in cases:
        idp.spoil = spoil
        idp.sign_with = _new_key(idp.key.kid or "") if other_key else None
        async with browser() as http:
            status, html = await sso(site, http)
            assert status == 401, (reason, html)
            assert reason in html.replace("&#39;", "'"), html
            assert not has_session(http)
    assert await sessions(site) == []
    failures = [
        r for r in await audit_rows(site, "authentication-failed") if r["detail"].get("method")
    ]
    assert len(failures) == len(cases)
    assert all(r["detail"]["method"] == "oidc" for r in failures)
    assert await audit_rows(site, "console-sign-in") == []


async def test_replayed_unknown_and_foreign_callbacks_are_refused(
    site: ConsoleSite, idp: OidcProvider
) -> None:
    idp.user = {"sub": "u-1001", "preferred_username": "dr.grey", "groups": ["vna-admins"]}
    async with browser() as http:
        callback = await to_callback(site, http)
        async with http.get(callback, allow_redirects=False) as resp:
            assert resp.status == 200
        async with browser() as other:
            # The callback carried to another browser: its state is spent anyway, and a fresh
            # one is bound to the browser that started it.
            async with other.get(callback, allow_redirects=False) as resp:
                assert resp.status == 401
                assert "already completed" in await resp.text()
            async with browser() as starter:
                fresh = await to_callback(site, starter)
            async with other.get(fresh, allow_redirects=False) as resp:
                assert resp.status == 401
                assert "started in another browser" in await resp.text()
            assert not has_session(other)
        # The same callback again, in the browser that used it: the state is spent.
        async with http.get(callback, allow_redirects=False) as resp:
            assert resp.status == 401
            assert "already completed" in await resp.text()
        async with http.get(
            f"{site.ui}/oidc/callback?state=made-up&code=x", allow_redirects=False
        ) as resp:
            assert resp.status == 401
        async with http.get(f"{site.ui}/oidc/callback", allow_redirects=False) as resp:
            assert resp.status == 401
    assert len(await sessions(site)) == 1  # the one good sign-in


async def test_a_user_in_no_mapped_group_is_refused_and_audited(
    site: ConsoleSite, idp: OidcProvider
) -> None:
    idp.user = {"sub": "u-3003", "preferred_username": "nurse.ratched", "groups": ["nurses"]}
    async with browser() as http:
        status, html = await sso(site, http)
        assert status == 403
        assert "nurse.ratched" in html and "no group" in html
        assert not has_session(http)
        async with http.get(f"{site.ui}/studies", allow_redirects=False) as resp:
            assert resp.status == 303
    assert await sessions(site) == []
    (denied,) = [r for r in await audit_rows(site, "access-denied") if r["actor"] == "oidc:u-3003"]
    assert denied["detail"]["subject"] == "u-3003"
    assert denied["detail"]["groups"] == ["nurses"]


async def test_a_rotated_key_is_fetched_and_token_sessions_still_work(
    site: ConsoleSite, idp: OidcProvider
) -> None:
    idp.user = {"sub": "u-1001", "preferred_username": "dr.grey", "groups": ["vna-admins"]}
    async with browser() as http:
        assert (await sso(site, http))[0] == 200
    fetched = idp.jwks_fetches
    idp.rotate()
    async with browser() as http:
        status, html = await sso(site, http)
        assert status == 200, html
    assert idp.jwks_fetches == fetched + 1
    # A token sign-in beside OIDC ones: unchanged, and its session re-resolves the token.
    async with signed_in(site, site.reader_token) as http:
        async with http.get(f"{site.ui}/studies", allow_redirects=False) as resp:
            assert resp.status == 200
        async with http.get(f"{site.ui}/signin") as resp:
            assert resp.status == 200 and csrf_of(await resp.text())
    rows = await sessions(site)
    assert sorted(r["role"] or "token" for r in rows) == ["admin", "admin", "token"]


async def test_a_sign_in_the_provider_declines_is_refused_with_its_reason(
    site: ConsoleSite, idp: OidcProvider
) -> None:
    async with browser() as http:
        async with http.get(f"{site.ui}/oidc/start", allow_redirects=False) as resp:
            authorize = resp.headers["Location"]
        state = parse_qs(urlsplit(authorize).query)["state"][0]
        # The user pressed "Cancel" at the provider (RFC 6749 4.1.2.1).
        declined = f"{site.ui}/oidc/callback?" + urlencode(
            {"state": state, "error": "access_denied", "error_description": "User cancelled"}
        )
        async with http.get(declined, allow_redirects=False) as resp:
            assert resp.status == 401
            html = await resp.text()
        assert "did not sign you in (access_denied: User cancelled)" in html
        assert not has_session(http)
    assert idp.token_requests == []
