"""The console's retention, legal hold, DR, token and audit pages in a real browser (headless
Debian Chromium driven by playwright), as a records manager, a DR team and an auditor use them:
a review created and approved end to end (the held study survives), a hold set and released,
a drill run and its report opened, a token created and revoked, every one of these actions
found in the audit trail and exported; a reader reaches none of it.  No page logs a console
error; screenshots go to test-artifacts/console/."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import io
from pathlib import Path

import pytest

from lifecycle import retention
from lifecycle.worker import run_once
from tests.acceptance.console_browser import ConsoleBrowser, ConsolePage, console  # noqa: F401
from vna.config import ReplicaSettings, RetentionRuleSettings, Settings
from vna.errors import NotFound

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

RULE = RetentionRuleSettings(name="one-year", retain_years=1, study_date_to=dt.date(2024, 1, 31))


@pytest.fixture
def archive_settings(archive_settings: Settings, tmp_path: Path) -> Settings:
    """The console site's archive with a retention rule (every study is due) and a DR replica."""
    return dataclasses.replace(
        archive_settings,
        retention_rules=(RULE,),
        replicas=(ReplicaSettings("dr", f"file://{tmp_path / 'replica'}"),),
    )


async def click(p: ConsolePage, name: str, role: str = "button") -> None:
    await p.page.get_by_role(role, name=name).click()
    await p.page.wait_for_load_state()


async def main_text(p: ConsolePage) -> str:
    return str(await p.page.locator("main").inner_text())


async def test_retention_holds_drill_tokens_and_audit(
    console: ConsoleBrowser,  # noqa: F811
) -> None:
    site = console.site
    held, deleted = site.studies["HOSP2"][0], site.studies["HOSP1"][0]
    # What the lifecycle worker does in the background: retention dates, replication.
    await retention.recompute_stale(site.archive.db, (RULE,))
    await run_once(site.archive)
    admin = await console.page(site.admin_token)
    page = admin.page

    # A legal hold on patient P2 (HOSP2).
    await click(admin, "Holds", role="link")
    await page.get_by_label("Patient ID", exact=True).fill("P2")
    await page.get_by_label("Issuer of patient ID", exact=True).fill("HOSP2")
    await page.get_by_label("Reason", exact=True).fill("litigation 42")
    await click(admin, "Set legal hold")
    assert "Legal hold set." in await main_text(admin)
    await admin.shot("10-legal-holds")

    # A review as of today, read, its report opened, approved after the confirmation.
    await click(admin, "Retention", role="link")
    assert "one-year" in await main_text(admin)
    await admin.shot("11-retention")
    await click(admin, "Create review")
    body = await main_text(admin)
    assert "Review created" in body and "Held back by a legal hold" in body
    review_url = page.url.split("?")[0]
    await admin.shot("12-retention-review")
    await click(admin, "Open the HTML report", role="link")
    assert "Retention review" in await page.locator("h1").inner_text()
    await admin.goto(review_url.removeprefix(site.base))
    await click(admin, "Approve and delete…", role="link")
    body = await main_text(admin)
    assert "deletes 1 study" in body and "B)" in body  # the size, in bytes or kB/MB
    await admin.shot("13-retention-approve")
    await page.get_by_label("I approve deleting 1 study").check()
    await click(admin, "Approve and delete 1 study")
    body = await main_text(admin)
    assert "Review approved" in body and "deleted 4 instances" in body
    assert await site.archive.retriever.find(held)  # held: never deleted
    with pytest.raises(NotFound):
        await site.archive.retriever.find(deleted)

    # The hold released, with a reason.
    await click(admin, "Holds", role="link")
    hold_button = page.get_by_role("button", name="Release hold")
    await page.get_by_label("Reason for release").fill("case closed")
    await hold_button.click()
    await page.wait_for_load_state()
    assert "Legal hold released." in await main_text(admin)

    # A DR drill, its page and its full report.
    await click(admin, "DR", role="link")
    await page.get_by_label("Sample size").first.fill("5")

    # The progress line of a long drill (busy.js): a submit event alone, without sending
    # the form, shows it and disables the button.
    await page.locator("form[data-busy=drill-progress]").evaluate(
        "f => f.dispatchEvent(new Event('submit', {bubbles: true, cancelable: true}))"
    )
    await asyncio.sleep(0.2)
    assert "Drill running for 0 s" in await page.locator("#drill-progress").inner_text()
    assert await page.get_by_role("button", name="Run drill").is_disabled()
    await admin.goto("/ui/dr")
    await page.get_by_label("Sample size").first.fill("5")
    await click(admin, "Run drill")
    body = await main_text(admin)
    # The instances left after the approval, every one served bit-exact by the replica.
    async with site.archive.db.acquire() as conn:
        left = await conn.fetchval("SELECT count(*) FROM instances")
    assert "PASSED" in body and f"{left} of {left}" in body
    await admin.shot("14-dr-drill")
    await click(admin, "Open the full report", role="link")
    assert "Disaster-recovery drill" in await page.locator("h1").inner_text()
    await admin.goto("/ui/dr")
    assert "passed" in await main_text(admin)
    await admin.shot("15-dr")

    # A token created (shown once) and revoked.
    await click(admin, "Tokens", role="link")
    await page.get_by_label("Name", exact=True).fill("ward-viewer")
    await click(admin, "Create token")
    secret = (await page.locator("#new-token").inner_text()).strip()
    assert secret.startswith("vna_")
    await admin.shot("16-token-created")
    await admin.goto("/ui/tokens")
    assert secret not in await page.content()
    await click(admin, "Revoke ward-viewer")
    assert "Token revoked." in await main_text(admin)

    # The operations page.
    await click(admin, "Operations", role="link")
    assert "Storage tiers" in await main_text(admin)
    await admin.shot("17-operations")

    # The audit trail: each action, found by patient and by user.
    assert {"legal-hold-set", "legal-hold-release"} <= await admin.audit_actions(
        **{"Patient ID": "P2", "Issuer of patient ID": "HOSP2"}
    )
    assert "retention-delete" in await admin.audit_actions(**{"Patient ID": "P1"})
    for action in ("retention-review", "retention-approve", "dr-drill", "token-create"):
        found = await admin.audit_actions(User="admin-token", Action=action)
        assert found == {action}, action
    assert "token-revoke" in await admin.audit_actions(User="admin-token", Action="token-revoke")
    await admin.shot("18-audit")
    # Exported as CSV: a download with the patient's rows.
    await admin.goto("/ui/audit")
    await page.get_by_label("Patient ID", exact=True).fill("P2")
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Export CSV").click()
    download = await info.value
    # Chromium reports a navigation that turns into a download as an aborted request: the
    # download itself is the answer, not a fault.
    admin.bad = [b for b in admin.bad if "/ui/audit/export: net::ERR_ABORTED" not in b]
    saved = Path(await download.path())
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))  # noqa: ASYNC240 - a test
    assert {"legal-hold-set", "legal-hold-release"} <= {r["action"] for r in rows}

    # A reader reaches none of these pages, direct URLs included.
    reader = await console.page(site.reader_token)
    nav = await reader.page.locator("nav[aria-label=Main]").inner_text()
    for hidden in ("Retention", "Holds", "Operations", "DR", "Tokens", "Audit"):
        assert hidden not in nav
    for path in (
        "/ui/retention",
        review_url.removeprefix(site.base),
        f"{review_url.removeprefix(site.base)}/report.html",
        "/ui/holds",
        "/ui/operations",
        "/ui/dr",
        "/ui/tokens",
        "/ui/audit",
    ):
        await reader.goto(path, expect_status=403)
        assert "litigation" not in await reader.page.content()
    # Chromium fetches the favicon after a page has loaded and aborts the fetch when the next
    # navigation starts first (this test moves fast): no fault of a page.
    for opened in console.pages:
        opened.bad = [b for b in opened.bad if "favicon.svg: net::ERR_ABORTED" not in b]
