"""The web console in a real browser (headless Debian Chromium driven by playwright): what an
operator does, as they do it, with no console error on any page; screenshots of the main
pages are saved to test-artifacts/console/."""

from __future__ import annotations

import asyncio

import pytest

from tests.acceptance.console_browser import TABLET, ConsoleBrowser, console  # noqa: F401

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_admin_signs_in_and_finds_a_study(console: ConsoleBrowser) -> None:  # noqa: F811
    site = console.site
    admin = await console.page(site.admin_token)
    page = admin.page
    assert page.url.endswith("/ui/studies")
    await admin.shot("01-studies-search")
    await page.get_by_label("Patient name").fill("doe")
    await page.get_by_label("Accession number").fill("ACC-HOSP1")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_load_state()
    rows = page.locator("table tbody tr")
    assert await rows.count() == 1
    assert "DOE^JANE" in await rows.first.inner_text()
    await admin.shot("02-studies-results")
    await page.get_by_role("link", name="DOE^JANE").click()
    await page.wait_for_load_state()
    assert site.studies["HOSP1"][0] in await page.locator("main").inner_text()
    viewer = page.get_by_role("link", name="Open in viewer")
    assert site.studies["HOSP1"][0] in (await viewer.get_attribute("href") or "")
    # The thumbnails loaded (a broken image would have a natural width of 0).
    assert await page.locator(".thumbs img").count() == 2
    # Polled from here: wait_for_function evaluates a string, which the CSP rightly refuses.
    for _ in range(60):
        loaded = await page.locator(".thumbs img").evaluate_all(
            "els => els.every(i => i.complete && i.naturalWidth > 0)"
        )
        if loaded:
            break
        await asyncio.sleep(0.25)
    assert loaded, "the series thumbnails did not load"
    await admin.shot("03-study")
    # Keyboard only: the skip link is the first stop, and the form is reachable.
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.textContent")
    assert "Skip to content" in focused


async def test_a_restricted_reader_reaches_only_its_sources(
    console: ConsoleBrowser,  # noqa: F811
) -> None:
    site = console.site
    reader = await console.page(site.reader_token, viewport=TABLET)
    page = reader.page
    nav = await page.locator("nav[aria-label=Main]").inner_text()
    assert "Studies" in nav
    for hidden in ("Patients", "Conflicts", "Tokens", "Audit"):
        assert hidden not in nav
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_load_state()
    body = await page.locator("main").inner_text()
    assert "DOE^JANE" in body and "ROE^RICHARD" not in body
    await reader.shot("04-reader-studies-tablet")
    # Direct URLs: another hospital's study, and the admin pages.
    other = site.studies["HOSP2"][0]
    await reader.goto(f"/ui/studies/{other}", expect_status=404)
    assert "ROE" not in await page.content()
    for path in (
        "/ui/patients",
        "/ui/patients/1",
        "/ui/patients/changes",
        "/ui/conflicts",
        "/ui/conflicts/1",
    ):
        await reader.goto(path, expect_status=403)
        text = await page.locator("main").inner_text()
        assert "may not administer" in text and "ROE" not in text and "P1" not in text


async def test_a_form_post_without_csrf_token_is_refused(
    console: ConsoleBrowser,  # noqa: F811
) -> None:
    site = console.site
    admin = await console.page(site.admin_token)
    # The browser's own cookies, a form without the csrf field (as a forged page would send).
    response = await admin.page.request.post(
        f"{site.base}/ui/studies", form={"patient_name": "DOE"}
    )
    assert response.status == 403
    assert "security token" in await response.text()
    # A signed-in user's form carries it and works.
    await admin.goto("/ui/studies")
    await admin.page.get_by_role("button", name="Search").click()
    await admin.page.wait_for_load_state()
    assert await admin.page.locator("table tbody tr").count() == 3


async def test_admin_resolves_a_conflict(console: ConsoleBrowser) -> None:  # noqa: F811
    admin = await console.page(console.site.admin_token)
    page = admin.page
    await page.get_by_role("link", name="Conflicts").click()
    await page.wait_for_load_state()
    await page.get_by_role("link", name="Conflict 1").click()
    await page.wait_for_load_state()
    # The two headers side by side, the differing rows highlighted.
    differing = page.locator("tr.differs")
    texts = [await differing.nth(i).inner_text() for i in range(await differing.count())]
    assert any("StudyDescription" in t and "CT CHEST WITH CONTRAST" in t for t in texts)
    assert any("InstitutionName" in t and "(absent)" in t for t in texts)
    assert not any("PatientID" in t.split() for t in texts)
    await admin.shot("05-conflict")
    await page.get_by_role("button", name="Accept the quarantined version").click()
    await page.wait_for_load_state()
    assert "accepted" in await page.locator("main").inner_text()
    await page.get_by_role("link", name="All").click()
    await page.wait_for_load_state()
    assert "accepted by admin-token" in await page.locator("main").inner_text()
    # The archive now serves the accepted version of the instance.
    async with console.site.archive.db.acquire() as conn:
        described = await conn.fetchval(
            "SELECT i.metadata -> '00081030' -> 'Value' ->> 0 FROM instances i"
            " JOIN conflicts c ON c.sop_uid = i.sop_uid WHERE c.id = 1"
        )
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit WHERE action = 'conflict-accept' AND actor = 'admin-token'"
        )
    assert described == "CT CHEST WITH CONTRAST"
    assert audited == 1
    # The console's own audit page finds it, by user and action.
    found = await admin.audit_actions(User="admin-token", Action="conflict-accept")
    assert found == {"conflict-accept"}


async def test_admin_merges_two_patients_and_undoes_it(
    console: ConsoleBrowser,  # noqa: F811
) -> None:
    site = console.site
    admin = await console.page(site.admin_token)
    page = admin.page
    await page.get_by_role("link", name="Patients").click()
    await page.wait_for_load_state()
    await page.get_by_label("Patient ID", exact=True).fill("P1-DUP")
    await page.get_by_role("button", name="Find").click()
    await page.wait_for_load_state()
    await page.get_by_role("link", name="P1-DUP").click()
    await page.wait_for_load_state()
    await admin.shot("06-patient")
    await page.get_by_label("Target Patient ID").fill("P1")
    await page.get_by_label("Target issuer").fill("HOSP1")
    await page.get_by_role("button", name="Preview the merge").click()
    await page.wait_for_load_state()
    preview = await page.locator("main").inner_text()
    assert "1 study" in preview and "ACC-DUP" in preview and "P1^^^HOSP1" in preview
    await admin.shot("07-merge-preview")
    await page.get_by_role("button", name="Merge").click()
    await page.wait_for_load_state()
    assert "/ui/patients/changes" in page.url
    assert "The patients were merged." in await page.locator("main").inner_text()
    assert await _patient_of(site, site.duplicate_study) == ("P1", "HOSP1")
    await admin.shot("08-changes")
    await page.get_by_role("button", name="Undo change").first.click()
    await page.wait_for_load_state()
    assert "The change was undone." in await page.locator("main").inner_text()
    assert await _patient_of(site, site.duplicate_study) == ("P1-DUP", "HOSP1")
    async with site.archive.db.acquire() as conn:
        actions = [
            r["action"]
            for r in await conn.fetch(
                "SELECT action FROM audit WHERE actor = 'admin-token' ORDER BY id"
            )
        ]
    assert "patient-merge" in actions and "patient-merge-undo" in actions
    # The console's own audit page finds both, by user and action.
    for action in ("patient-merge", "patient-merge-undo"):
        assert await admin.audit_actions(User="admin-token", Action=action) == {action}


async def _patient_of(site, study_uid: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    async with site.archive.db.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT p.patient_id, p.issuer FROM studies s JOIN patients p"
            " ON p.id = s.patient_fk WHERE s.study_uid = $1",
            study_uid,
        )
    return (row["patient_id"], row["issuer"])
