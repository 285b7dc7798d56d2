"""The web console in a real browser (headless Debian Chromium driven by playwright): what an
operator does, as they do it, with no console error on any page; screenshots of the main
pages are saved to test-artifacts/console/."""

from __future__ import annotations

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
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_load_state()
    rows = page.locator("table tbody tr")
    assert await rows.count() == 1
    assert "DOE^JANE" in await rows.first.inner_text()
    await admin.shot("02-studies-results")
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
    await reader.shot("03-reader-studies-tablet")
    # Direct URLs: another hospital's study, and the admin pages.
    other = site.studies["HOSP2"][0]
    await reader.goto(f"/ui/studies/{other}", expect_status=404)
    assert "ROE" not in await page.content()
    for path in ("/ui/patients", "/ui/conflicts"):
        await reader.goto(path, expect_status=(403, 404))
        assert "ROE" not in await page.content()


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
    assert await admin.page.locator("table tbody tr").count() == 2
