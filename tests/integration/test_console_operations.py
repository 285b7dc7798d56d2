"""The console's retention, legal hold, operations, DR, token and audit pages over HTTP: each
action goes through the engine (and so is audited), a held study is never deleted by an
approval, the approval's confirmation names what goes, and a reader reaches none of it."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from lifecycle import retention
from lifecycle.worker import run_once
from tests.console_support import ConsoleSite, console_site, csrf_of, page_csrf, signed_in
from vna.config import ReplicaSettings, RetentionRuleSettings, Settings
from vna.errors import NotFound
from vna.security.audit import AuditFilter, search

pytestmark = pytest.mark.asyncio

#: The console site's two studies dated 2024-01-15 are due under it (not the duplicate
#: identity's study of 2024-03-01, kept for the patients pages).
RULE = RetentionRuleSettings(name="one-year", retain_years=1, study_date_to=dt.date(2024, 1, 31))
DEAD_FIGURE = re.compile(r"<b>(\d+)</b>dead")
ADMIN_PAGES = (
    "/retention",
    "/retention/due",
    "/holds",
    "/operations",
    "/dr",
    "/tokens",
    "/audit",
)


@pytest.fixture
def archive_settings(archive_settings: Settings, tmp_path: Path) -> Settings:
    """The console site's archive with a retention rule and a filesystem DR replica."""
    return dataclasses.replace(
        archive_settings,
        retention_rules=(RULE,),
        replicas=(ReplicaSettings("dr", f"file://{tmp_path / 'replica'}"),),
    )


@pytest.fixture
async def site(archive_settings: Settings) -> AsyncIterator[ConsoleSite]:
    async with console_site(archive_settings) as running:
        yield running


async def audit_of(site: ConsoleSite, **criteria: str) -> list[dict]:
    async with site.archive.db.acquire() as conn:
        return await search(conn, AuditFilter(**criteria))


async def study_exists(site: ConsoleSite, uid: str) -> bool:
    try:
        return bool(await site.archive.retriever.find(uid))
    except NotFound:
        return False


async def post(http: aiohttp.ClientSession, url: str, data: dict) -> tuple[int, str]:
    async with http.post(url, data=data) as resp:
        return resp.status, await resp.text()


async def test_review_approval_deletes_the_due_study_and_never_the_held_one(
    site: ConsoleSite,
) -> None:
    kept, gone = site.studies["HOSP2"][0], site.studies["HOSP1"][0]
    # What the lifecycle worker does for every study it receives.
    await retention.recompute_stale(site.archive.db, (RULE,))
    async with signed_in(site, site.admin_token) as http:
        csrf = await page_csrf(http, f"{site.ui}/retention")
        async with http.get(f"{site.ui}/retention") as resp:
            html = await resp.text()
        assert "one-year" in html
        # Both studies (2024-01-15, kept a year) are due already: none falls due later.
        assert "No study falls due from today on" in html
        # Hold every study of patient P2 (HOSP2).
        status, html = await post(
            http,
            f"{site.ui}/holds",
            {"csrf": csrf, "patient_id": "P2", "issuer": "HOSP2", "reason": "litigation 42"},
        )
        assert status == 200 and "Legal hold set." in html and "litigation 42" in html
        async with http.get(f"{site.ui}/retention/due?within=0") as resp:
            html = await resp.text()
        assert kept in html and gone in html
        # Create a review: the redirect lands on it.
        async with http.post(
            f"{site.ui}/retention/reviews", data={"csrf": csrf, "as_of": "2026-01-01"}
        ) as resp:
            assert resp.status == 200
            review_url = str(resp.url).split("?")[0]
            html = await resp.text()
        review_id = review_url.rsplit("/", 1)[1]
        assert "Review created" in html and "as of 2026-01-01" in html
        assert "Held back by a legal hold" in html and "litigation 42" in html
        # The report exactly as the command line writes it, with only its own stylesheet.
        async with http.get(f"{review_url}/report.html") as resp:
            report = await resp.text()
            csp = resp.headers["Content-Security-Policy"]
        assert resp.status == 200 and f"Retention review {review_id}" in report
        assert re.search(r"style-src 'sha256-[A-Za-z0-9+/=]+'", csp) and "script" not in csp
        async with http.get(f"{review_url}/report.csv") as resp:
            rows = list(csv.DictReader(io.StringIO(await resp.text())))
            assert "attachment" in resp.headers["Content-Disposition"]
        assert {r["study_uid"]: r["state"] for r in rows} == {gone: "due", kept: "held"}
        # The confirmation names the studies and the bytes.
        async with http.get(f"{review_url}/approve") as resp:
            html = await resp.text()
        n_bytes = re.search(r'name="bytes" value="(\d+)"', html)
        assert n_bytes and int(n_bytes.group(1)) > 0
        assert 'name="studies" value="1"' in html
        assert "deletes <strong>1 study</strong>" in html
        # Not confirmed, or confirmed for other figures: nothing happens.
        confirm = {"csrf": csrf, "studies": "1", "bytes": n_bytes.group(1)}
        status, html = await post(http, f"{review_url}/approve", {**confirm})
        assert status == 400 and "confirmation" in html
        status, html = await post(
            http, f"{review_url}/approve", {**confirm, "confirm": "yes", "studies": "2"}
        )
        assert status == 400 and "changed since the confirmation" in html
        assert await study_exists(site, gone)
        status, html = await post(http, f"{review_url}/approve", {**confirm, "confirm": "yes"})
        assert status == 200 and "Review approved" in html
        assert "deleted 4 instances" in html
    assert not await study_exists(site, gone)
    assert await study_exists(site, kept)  # held: never deleted
    actions = {r["action"] for r in await audit_of(site, actor="admin-token")}
    assert {
        "legal-hold-set",
        "retention-review",
        "retention-approve",
        "retention-delete",
    } <= actions
    (approval,) = await audit_of(site, action="retention-approve")
    assert approval["detail"]["confirmed"] == "console"
    assert approval["detail"]["studies"] == 1


async def test_hold_set_and_release(site: ConsoleSite) -> None:
    study = site.studies["HOSP1"][0]
    async with signed_in(site, site.admin_token) as http:
        csrf = await page_csrf(http, f"{site.ui}/holds")
        status, html = await post(http, f"{site.ui}/holds", {"csrf": csrf, "reason": "x"})
        assert status == 400 and "a study (its UID) or a patient" in html
        status, html = await post(
            http, f"{site.ui}/holds", {"csrf": csrf, "study_uid": study, "reason": "audit"}
        )
        assert status == 200 and study in html
        hold = re.search(r'action="/ui/holds/(\d+)/release"', html)
        assert hold
        release = f"{site.ui}/holds/{hold.group(1)}/release"
        status, html = await post(http, release, {"csrf": csrf})
        assert status == 400 and "say why" in html
        status, html = await post(http, release, {"csrf": csrf, "reason": "case closed"})
        assert status == 200 and "Legal hold released." in html and study not in html
        async with http.get(f"{site.ui}/holds?all=1") as resp:
            assert "released" in await resp.text()
        status, html = await post(http, release, {"csrf": csrf, "reason": "again"})
        assert status == 400 and "already released" in html
    released = await audit_of(site, action="legal-hold-release")
    assert [(r["actor"], r["study_uid"], r["detail"]["reason"]) for r in released] == [
        ("admin-token", study, "case closed")
    ]


async def test_operations_shows_the_queue_and_retries_a_dead_job(site: ConsoleSite) -> None:
    async with site.archive.db.acquire() as conn:
        job = await conn.fetchval(
            "UPDATE jobs SET state = 'dead', last_error = 'disk on fire'"
            " WHERE id = (SELECT min(id) FROM jobs) RETURNING id"
        )
    assert job is not None
    async with signed_in(site, site.admin_token) as http:
        async with http.get(f"{site.ui}/operations") as resp:
            html = await resp.text()
        assert "disk on fire" in html and f"Retry job {job}" in html
        assert "Storage tiers" in html and "Compression" in html
        assert DEAD_FIGURE.search(html).group(1) == "1"  # type: ignore[union-attr]
        csrf = csrf_of(html)
        # The queue figures are kept a minute (they sum over the catalogue); refresh or an
        # action of the page computes them again.
        async with site.archive.db.acquire() as conn:
            other = await conn.fetchval(
                "UPDATE jobs SET state = 'dead' WHERE id = (SELECT max(id) FROM jobs) RETURNING id"
            )
        async with http.get(f"{site.ui}/operations") as resp:
            assert DEAD_FIGURE.search(await resp.text()).group(1) == "1"  # type: ignore[union-attr]
        async with http.get(f"{site.ui}/operations?refresh=1") as resp:
            assert DEAD_FIGURE.search(await resp.text()).group(1) == "2"  # type: ignore[union-attr]
        status, html = await post(http, f"{site.ui}/operations/retry", {"csrf": csrf, "job": job})
        assert status == 200 and "Queued again: 1 job(s)." in html and "disk on fire" not in html
        assert DEAD_FIGURE.search(html).group(1) == "1"  # type: ignore[union-attr]
        assert f"Retry job {other}" in html
        status, html = await post(http, f"{site.ui}/operations/retry", {"csrf": csrf, "job": job})
        assert status == 400 and "not dead" in html
    async with site.archive.db.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM jobs WHERE id = $1", job) == "queued"


async def test_dr_drill_report_and_fixity(site: ConsoleSite) -> None:
    await run_once(site.archive)  # copies every instance to the replica
    async with signed_in(site, site.admin_token) as http:
        async with http.get(f"{site.ui}/dr") as resp:
            html = await resp.text()
        assert "No drill yet." in html and "file://" in html
        csrf = csrf_of(html)
        status, html = await post(
            http, f"{site.ui}/dr/drills", {"csrf": csrf, "replica": "dr", "sample": "5"}
        )
        assert status == 200 and "PASSED" in html and "5 of 5" in html
        drill = re.search(r'href="/ui/dr/drills/(\d+)/report.html"', html)
        assert drill
        async with http.get(f"{site.ui}/dr/drills/{drill.group(1)}/report.html") as resp:
            report = await resp.text()
            assert "style-src 'sha256-" in resp.headers["Content-Security-Policy"]
        assert "Disaster-recovery drill" in report and "PASSED" in report
        status, html = await post(http, f"{site.ui}/dr/drills", {"csrf": csrf, "sample": "0"})
        assert status == 400 and "at least 1" in html
        status, html = await post(
            http, f"{site.ui}/dr/fixity", {"csrf": csrf, "store": "dr", "sample": "3"}
        )
        assert status == 200 and "every instance read was intact" in html
        assert f'href="/ui/dr/drills/{drill.group(1)}"' in html
    drills = await audit_of(site, action="dr-drill")
    checks = await audit_of(site, action="fixity-check")
    assert [r["actor"] for r in drills] == ["admin-token"]
    assert [(r["actor"], r["detail"]["store"]) for r in checks] == [("admin-token", "dr")]


async def test_token_created_shown_once_and_revoked(site: ConsoleSite) -> None:
    async with signed_in(site, site.admin_token) as http:
        csrf = await page_csrf(http, f"{site.ui}/tokens")
        status, html = await post(
            http, f"{site.ui}/tokens", {"csrf": csrf, "name": "bad name!", "role": "reader"}
        )
        assert status == 400 and "token name" in html
        status, html = await post(
            http,
            f"{site.ui}/tokens",
            {
                "csrf": csrf,
                "name": "ward-viewer",
                "role": "reader",
                "restrict": "1",
                "read_sources": "HOSP2",
            },
        )
        assert status == 200 and "not shown again" in html
        secret = re.search(r'class="secret">([^<]+)<', html)
        assert secret
        async with http.get(f"{site.ui}/tokens") as resp:
            listing = await resp.text()
        assert secret.group(1) not in listing and "reads HOSP2" in listing
    # The new token signs in and sees HOSP2 only; once revoked, it cannot.
    async with signed_in(site, secret.group(1)) as reader:
        async with reader.get(f"{site.ui}/studies") as resp:
            assert resp.status == 200
    async with signed_in(site, site.admin_token) as http:
        csrf = await page_csrf(http, f"{site.ui}/tokens")
        status, html = await post(
            http, f"{site.ui}/tokens/revoke", {"csrf": csrf, "name": "ward-viewer"}
        )
        assert status == 200 and "Token revoked." in html
        assert "Revoke ward-viewer" not in html
    with pytest.raises(AssertionError):
        async with signed_in(site, secret.group(1)):
            pass
    made = await audit_of(site, actor="admin-token", action="token-create")
    revoked = await audit_of(site, actor="admin-token", action="token-revoke")
    assert len(made) == 1 and len(revoked) == 1


async def test_audit_search_and_exports(site: ConsoleSite) -> None:
    study = site.studies["HOSP2"][0]
    async with signed_in(site, site.admin_token) as http:
        csrf = await page_csrf(http, f"{site.ui}/holds")
        await post(
            http,
            f"{site.ui}/holds",
            {"csrf": csrf, "patient_id": "P2", "issuer": "HOSP2", "reason": "subpoena"},
        )
        search_form = {"csrf": csrf, "patient_id": "P2", "issuer": "HOSP2"}
        status, html = await post(http, f"{site.ui}/audit", search_form)
        assert status == 200 and "legal-hold-set" in html and "subpoena" in html
        assert "DOE" not in html  # P1's rows are not P2's
        status, html = await post(http, f"{site.ui}/audit", {"csrf": csrf, "since": "soon"})
        assert status == 400 and "From must be a date" in html
        async with http.post(
            f"{site.ui}/audit/export", data={**search_form, "format": "csv"}
        ) as resp:
            assert resp.headers["Content-Disposition"].startswith("attachment")
            rows = list(csv.DictReader(io.StringIO(await resp.text())))
        assert "legal-hold-set" in {r["action"] for r in rows}
        assert study in {r["study_uid"] for r in rows}  # the store of the study
        async with http.post(
            f"{site.ui}/audit/export", data={**search_form, "format": "jsonl"}
        ) as resp:
            lines = (await resp.text()).splitlines()
        messages = [json.loads(line) for line in lines]
        # The CSV export disclosed patient P2: it is in the trail now too.
        assert len(messages) == len(rows) + 1
        events = {m["EventIdentification"]["EventID"]["originalText"] for m in messages}
        assert "Security Alert" in events
    searches = await audit_of(site, action="query", actor="admin-token")
    pages = [r["detail"].get("page") for r in searches]
    assert "audit-search" in pages and "audit-export-csv" in pages


async def test_a_reader_reaches_none_of_these_pages(site: ConsoleSite) -> None:
    async with signed_in(site, site.reader_token) as http:
        async with http.get(f"{site.ui}/studies") as resp:
            html = await resp.text()
            csrf = csrf_of(html)
        for label in ("Retention", "Holds", "Operations", "DR", "Tokens", "Audit"):
            assert f">{label}<" not in html
        for path in ADMIN_PAGES:
            async with http.get(f"{site.ui}{path}", allow_redirects=False) as resp:
                assert resp.status == 403, path
        posts = {
            "/holds": {"study_uid": site.studies["HOSP1"][0], "reason": "x"},
            "/retention/reviews": {"as_of": "2026-01-01"},
            "/operations/retry": {"all": "1"},
            "/dr/drills": {"sample": "1"},
            "/tokens": {"name": "sneaky", "role": "admin"},
            "/tokens/revoke": {"name": "hosp1-reader"},
            "/audit/export": {"format": "csv"},
        }
        for path, data in posts.items():
            status, _ = await post(http, f"{site.ui}{path}", {"csrf": csrf, **data})
            assert status == 403, path
    assert not await audit_of(site, action="legal-hold-set")
    assert not await audit_of(site, action="token-create", actor="hosp1-reader")
    denied = await audit_of(site, action="access-denied", actor="hosp1-reader")
    assert len(denied) == len(ADMIN_PAGES) + len(posts)


async def test_a_hold_set_after_the_review_still_keeps_the_study(site: ConsoleSite) -> None:
    """The review listed both studies as due; a hold set afterwards wins at approval."""
    kept, gone = site.studies["HOSP2"][0], site.studies["HOSP1"][0]
    await retention.recompute_stale(site.archive.db, (RULE,))
    async with signed_in(site, site.admin_token) as http:
        csrf = await page_csrf(http, f"{site.ui}/retention")
        async with http.post(f"{site.ui}/retention/reviews", data={"csrf": csrf}) as resp:
            review_url = str(resp.url).split("?")[0]
            assert "Held back by a legal hold" not in await resp.text()
        status, _ = await post(
            http, f"{site.ui}/holds", {"csrf": csrf, "study_uid": kept, "reason": "late hold"}
        )
        assert status == 200
        async with http.get(f"{review_url}/approve") as resp:
            html = await resp.text()
        assert "deletes <strong>1 study</strong>" in html  # not 2: the held one is kept
        n_bytes = re.search(r'name="bytes" value="(\d+)"', html)
        assert n_bytes
        status, html = await post(
            http,
            f"{review_url}/approve",
            {"csrf": csrf, "confirm": "yes", "studies": "1", "bytes": n_bytes.group(1)},
        )
        assert status == 200 and "late hold" in html  # the skipped study says why
    assert await study_exists(site, kept)
    assert not await study_exists(site, gone)
