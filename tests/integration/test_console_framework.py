"""The web console's framework over HTTP: sign-in and sign-out, the session cookie, CSRF,
security headers, roles (a reader restricted to one hospital, admin-only pages), the audit of
pages that show patient data."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import free_port
from tests.console_support import (
    HOSP2,
    ConsoleSite,
    console_site,
    csrf_of,
    ingest,
    page_csrf,
    signed_in,
)
from vna.archive import Archive
from vna.catalog import changes
from vna.config import Settings
from vna.gateway.auth import AUTH
from vna.security.audit import AuditFilter, search

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def site(archive_settings: Settings) -> AsyncIterator[ConsoleSite]:
    async with console_site(archive_settings) as running:
        yield running


async def audit_rows(site: ConsoleSite, action: str) -> list[dict]:
    async with site.archive.db.acquire() as conn:
        return await search(conn, AuditFilter(action=action))


async def test_root_redirects_and_pages_need_sign_in(site: ConsoleSite) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{site.base}/", allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "/ui/"
        async with http.get(f"{site.ui}/studies", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/ui/signin"
        async with http.get(f"{site.ui}/signin") as resp:
            assert resp.status == 200
            assert 'type="password"' in await resp.text()
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
            assert "frame-ancestors 'none'" in csp
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["Cache-Control"] == "no-store"


async def test_sign_in_sets_a_strict_session_cookie_and_sign_out_ends_it(
    site: ConsoleSite,
) -> None:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        async with http.get(f"{site.ui}/signin") as resp:
            csrf = csrf_of(await resp.text())
        async with http.post(
            f"{site.ui}/signin",
            data={"csrf": csrf, "token": site.admin_token},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
            cookie = resp.cookies["vna_console"]
            assert cookie["httponly"] is True
            assert cookie["samesite"] == "Strict"
            assert not cookie["secure"]  # plain HTTP here; HTTPS sets Secure
            assert int(cookie["max-age"]) == site.archive.settings.ui.session_minutes * 60
            assert site.admin_token not in cookie.value
        async with http.get(f"{site.ui}/studies") as resp:
            assert resp.status == 200
            html = await resp.text()
            assert "admin-token" in html and "Sign out" in html
        csrf = csrf_of(html)
        async with http.post(
            f"{site.ui}/signout", data={"csrf": csrf}, allow_redirects=False
        ) as resp:
            assert resp.status == 303
        # The old cookie, replayed, no longer opens anything.
        replay = aiohttp.ClientSession(cookies={"vna_console": cookie.value})
        async with replay.get(f"{site.ui}/studies", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/ui/signin"
        await replay.close()
    finally:
        await http.close()
    signins = await audit_rows(site, "console-sign-in")
    signouts = await audit_rows(site, "console-sign-out")
    assert [r["actor"] for r in signins] == ["admin-token"]
    assert [r["actor"] for r in signouts] == ["admin-token"]


async def test_a_bad_token_is_refused_and_audited(site: ConsoleSite) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{site.ui}/signin") as resp:
            csrf = csrf_of(await resp.text())
        async with http.post(
            f"{site.ui}/signin", data={"csrf": csrf, "token": "vna_nobody"}
        ) as resp:
            assert resp.status == 401
            assert "not valid" in await resp.text()
    failed = await audit_rows(site, "authentication-failed")
    assert failed and failed[-1]["detail"]["path"] == "/ui/signin"


async def test_posts_without_the_csrf_token_are_refused(site: ConsoleSite) -> None:
    # Sign-in itself: no token, or one that is not the cookie's.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{site.ui}/signin", data={"token": site.admin_token}) as resp:
            assert resp.status == 403
        async with http.get(f"{site.ui}/signin") as resp:
            csrf_of(await resp.text())
        async with http.post(
            f"{site.ui}/signin", data={"token": site.admin_token, "csrf": "forged"}
        ) as resp:
            assert resp.status == 403
    async with signed_in(site, site.admin_token) as http:
        for path in ("/studies", "/signout"):
            async with http.post(f"{site.ui}{path}", data={"patient_name": "DOE"}) as resp:
                assert resp.status == 403, path
                assert "security token" in await resp.text()
            async with http.post(f"{site.ui}{path}", data={"csrf": "wrong"}) as resp:
                assert resp.status == 403, path
        # Still signed in: the refused sign-out did nothing.
        async with http.get(f"{site.ui}/studies", allow_redirects=False) as resp:
            assert resp.status == 200


async def test_study_search_is_audited_and_scoped_to_the_readers_sources(
    site: ConsoleSite,
) -> None:
    hosp1, hosp2 = site.studies["HOSP1"][0], site.studies["HOSP2"][0]
    async with signed_in(site, site.admin_token) as http:
        csrf = await page_csrf(http, f"{site.ui}/studies")
        async with http.post(f"{site.ui}/studies", data={"csrf": csrf}) as resp:
            html = await resp.text()
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
        assert hosp1 in html and hosp2 in html
        async with http.post(
            f"{site.ui}/studies", data={"csrf": csrf, "patient_name": "roe"}
        ) as resp:
            html = await resp.text()
        assert hosp2 in html and hosp1 not in html
    async with signed_in(site, site.reader_token) as http:
        csrf = await page_csrf(http, f"{site.ui}/studies")
        for data in ({}, {"source": "HOSP2"}, {"patient_id": "P2"}):
            async with http.post(f"{site.ui}/studies", data={"csrf": csrf, **data}) as resp:
                html = await resp.text()
            assert hosp2 not in html and "ROE" not in html, data
        async with http.post(f"{site.ui}/studies", data={"csrf": csrf}) as resp:
            assert hosp1 in await resp.text()
    searches = [
        r for r in await audit_rows(site, "query") if r["detail"].get("protocol") == "console"
    ]
    assert len(searches) == 6
    assert {r["actor"] for r in searches} == {"admin-token", "hosp1-reader"}
    reader_rows = [r for r in searches if r["actor"] == "hosp1-reader"]
    assert all(r["study_uid"] != hosp2 for r in reader_rows)


async def test_admin_pages_are_hidden_and_refused_for_a_reader(site: ConsoleSite) -> None:
    async with signed_in(site, site.reader_token) as http:
        async with http.get(f"{site.ui}/studies") as resp:
            html = await resp.text()
        assert 'href="/ui/studies"' in html
        assert ">Patients<" not in html and ">Conflicts<" not in html
        for path in ("/patients", "/patients/1", "/patients/changes", "/conflicts/1"):
            async with http.get(f"{site.ui}{path}", allow_redirects=False) as resp:
                assert resp.status == 403, path
        # Admin actions posted directly, even with the reader's own valid CSRF token.
        csrf = await page_csrf(http, f"{site.ui}/studies")
        for path in ("/patients/1/merge", "/patients/changes/1/undo", "/conflicts/1/resolve"):
            async with http.post(
                f"{site.ui}{path}", data={"csrf": csrf, "action": "discard"}
            ) as resp:
                assert resp.status == 403, path
    async with site.archive.db.acquire() as conn:
        state = await conn.fetchval("SELECT state FROM conflicts WHERE id = 1")
    assert state == "open"
    async with signed_in(site, site.admin_token) as http:
        async with http.get(f"{site.ui}/studies") as resp:
            html = await resp.text()
        assert 'href="/ui/studies"' in html


async def test_static_files_are_served_with_the_same_headers(site: ConsoleSite) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{site.ui}/static/console.css") as resp:
            assert resp.status == 200
            assert "text/css" in resp.headers["Content-Type"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(f"{site.ui}/static/console.js") as resp:
            assert resp.status == 200


async def test_study_page_shows_series_storage_and_viewer_link(site: ConsoleSite) -> None:
    hosp1, hosp2 = site.studies["HOSP1"][0], site.studies["HOSP2"][0]
    async with site.archive.db.acquire() as conn:
        await changes.sequence(conn)  # as the lifecycle scheduler does: into the change log
        # One instance of the study has a verified copy on replica dr1 (as replication
        # records it).
        await conn.execute(
            "INSERT INTO replicas (store, object_key, instance_fk, sha256, size)"
            " SELECT 'dr1', i.object_key, i.id, i.sha256, i.stored_size FROM instances i"
            " JOIN series se ON se.id = i.series_fk JOIN studies st ON st.id = se.study_fk"
            " WHERE st.study_uid = $1 ORDER BY se.series_number, i.id LIMIT 1",
            hosp1,
        )
    async with signed_in(site, site.admin_token) as http:
        async with http.get(f"{site.ui}/studies/{hosp1}") as resp:
            html = await resp.text()
            assert resp.status == 200, html
            assert resp.headers["Cache-Control"] == "no-store"
        assert "DOE^JANE" in html and "ACC-HOSP1" in html and "HOSP1" in html
        assert f"https://ohif.example/viewer?StudyInstanceUIDs={hosp1}" in html
        assert html.count("/thumbnail") == 2  # two series with pixel data
        assert "hot" in html and "none" in html  # tier and compression
        assert "Instance change log" in html and "<td>create</td>" in html
        assert "Replica dr1" in html
        assert '<span class="badge bad">1/2</span>' in html  # series 1: one of two copied
        assert '<span class="badge bad">0/2</span>' in html
        thumb = html.split('src="')[-1].split('"')[0]
        async with http.get(f"{site.base}{thumb}") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "image/jpeg"
            assert (await resp.read())[:2] == b"\xff\xd8"
        async with http.get(f"{site.ui}/studies/1.2.3.4") as resp:
            assert resp.status == 404
    async with signed_in(site, site.reader_token) as http:
        async with http.get(f"{site.ui}/studies/{hosp1}") as resp:
            assert resp.status == 200
        async with http.get(f"{site.ui}/studies/{hosp2}") as resp:
            assert resp.status == 404
            assert "ROE" not in await resp.text()
    views = [r for r in await audit_rows(site, "query") if r["detail"].get("page") == "study"]
    assert {(r["actor"], r["study_uid"]) for r in views} == {
        ("admin-token", hosp1),
        ("hosp1-reader", hosp1),
    }
    denied = await audit_rows(site, "access-denied")
    assert any(r["study_uid"] == hosp2 and r["actor"] == "hosp1-reader" for r in denied)


async def test_an_idle_session_and_a_revoked_token_end_the_session(site: ConsoleSite) -> None:
    async with signed_in(site, site.reader_token) as http:
        async with http.get(f"{site.ui}/studies", allow_redirects=False) as resp:
            assert resp.status == 200
        # Idle for longer than [ui] idle_minutes: signed out.
        async with site.archive.db.acquire() as conn:
            await conn.execute(
                "UPDATE console_sessions SET last_seen = now() - interval '31 minutes'"
            )
        async with http.get(f"{site.ui}/studies", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/ui/signin"
    async with signed_in(site, site.reader_token) as http:
        async with site.archive.db.transaction() as conn:
            from vna.security import tokens

            await tokens.revoke_token(conn, "hosp1-reader", actor="test")
        # The authenticator remembers a token for [http] token_cache_seconds, as for the API;
        # a revocation in this process (vna.security.authn.Authenticator.forget) is at once.
        assert site.app is not None
        site.app[AUTH].forget()
        async with http.get(f"{site.ui}/studies", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/ui/signin"
    async with site.archive.db.acquire() as conn:
        left = await conn.fetchval("SELECT count(*) FROM console_sessions")
    assert left == 0  # the revoked token's session was deleted, the idle one purged


async def _patient_pk(site: ConsoleSite, patient_id: str) -> int:
    async with site.archive.db.acquire() as conn:
        return int(await conn.fetchval("SELECT id FROM patients WHERE patient_id = $1", patient_id))


async def test_patient_link_unlink_correct_and_pending_links(site: ConsoleSite) -> None:
    # HOSP2 sends an instance identical to one of HOSP1's: the archive proposes a link.
    await ingest(site.archive, site.datasets["HOSP1"][:1], HOSP2)
    pk = await _patient_pk(site, "P1")
    async with signed_in(site, site.admin_token) as http:
        page = f"{site.ui}/patients/{pk}"
        csrf = await page_csrf(http, page)
        async with http.get(page) as resp:
            html = await resp.text()
        assert "Proposed links" in html and "P1^^^HOSP2" in html
        async with site.archive.db.acquire() as conn:
            pending = await conn.fetchval("SELECT id FROM pending_patient_links")
        async with http.post(f"{page}/pending/{pending}/reject", data={"csrf": csrf}) as resp:
            assert resp.status == 200 and "rejected" in await resp.text()
        async with http.post(
            f"{page}/link",
            data={"csrf": csrf, "patient_id": "P2", "issuer": "HOSP2", "reason": "same woman"},
        ) as resp:
            html = await resp.text()
            assert resp.status == 200 and "The identities are linked." in html
        assert "P2^^^HOSP2" in html and "same woman" in html
        async with site.archive.db.acquire() as conn:
            link_id = await conn.fetchval("SELECT id FROM patient_links WHERE removed_at IS NULL")
        async with http.post(f"{page}/unlink", data={"csrf": csrf, "link": link_id}) as resp:
            assert "The link was removed." in await resp.text()
        # A correction changes only what was edited, everywhere; the history can undo it.
        async with http.post(
            f"{page}/update",
            data={
                "csrf": csrf,
                "PatientName": "DOE^JANET",
                "PatientBirthDate": "19700101",
                "PatientSex": "F",
                "PatientID": "P1",
                "IssuerOfPatientID": "HOSP1",
            },
        ) as resp:
            html = await resp.text()
            assert resp.status == 200, html
        assert "DOE^JANET" in html
        async with http.get(f"{site.ui}/patients/changes") as resp:
            html = await resp.text()
        assert "update" in html and "Undo change" in html
        # A bad merge target is a clear error, not a crash.
        async with http.post(
            f"{page}/merge/preview",
            data={"csrf": csrf, "into_patient_id": "NOPE", "into_issuer": "X"},
        ) as resp:
            assert resp.status == 404
            assert "NOPE^^^X is not in the archive" in await resp.text()
    actions = {r["action"] for r in await audit_rows(site, "patient-link")}
    assert actions == {"patient-link"}
    assert await audit_rows(site, "patient-unlink")
    assert await audit_rows(site, "patient-update")


async def test_unknown_pages_and_bad_requests_get_html_error_pages(site: ConsoleSite) -> None:
    async with signed_in(site, site.admin_token) as http:
        for path, status in (
            ("/nope", 404),
            ("/patients/999999", 404),
            ("/conflicts/999999", 404),
            ("/conflicts?state=bogus", 400),
            ("/studies/not-a-uid", 404),
        ):
            async with http.get(f"{site.ui}{path}") as resp:
                assert resp.status == status, path
                assert resp.headers["Content-Type"].startswith("text/html"), path
                assert "Content-Security-Policy" in resp.headers, path
                assert "Back to the console" in await resp.text(), path


async def test_long_lists_paginate(site: ConsoleSite) -> None:
    async with site.archive.db.acquire() as conn:
        await conn.execute(
            "INSERT INTO patients (patient_id, issuer, patient_name)"
            " SELECT 'Z' || lpad(g::text, 3, '0'), 'HOSP3', 'ZED^' || g"
            " FROM generate_series(1, 12) g"
        )
    async with signed_in(site, site.admin_token) as http:
        csrf = await page_csrf(http, f"{site.ui}/patients")
        seen: list[str] = []
        for number in (1, 2):
            async with http.post(
                f"{site.ui}/patients", data={"csrf": csrf, "page": str(number)}
            ) as resp:
                html = await resp.text()
            rows = html.split("<tbody>")[1].split("</tbody>")[0].count("<tr>")
            seen += [p for p in (f"Z{g:03d}" for g in range(1, 13)) if f">{p}<" in html]
            if number == 1:
                assert rows == 10 and 'value="2"' in html and "Next" in html
            else:
                assert rows == 5 and 'value="1"' in html and "Next" not in html
        assert sorted(seen) == [f"Z{g:03d}" for g in range(1, 13)]  # each once, none lost


async def test_a_new_archive_says_how_to_make_the_first_token(archive: Archive) -> None:
    from aiohttp import web

    from vna.gateway.web import create_app
    from vna.ui import register

    app = create_app(archive)
    register(app, archive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/ui/signin") as resp:
                html = await resp.text()
        assert "no API token yet" in html and "vna tokens create ops --role admin" in html
    finally:
        await runner.cleanup()
