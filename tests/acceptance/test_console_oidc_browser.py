"""Single sign-on in a real browser (headless Debian Chromium driven by playwright): the
operator presses "Sign in with Hospital SSO" from the keyboard, the test provider
(tests/oidc_provider.py) approves them, and they land on the console with their groups' role;
signing out ends the session.  No console error on any page."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from tests.acceptance.console_browser import CHROMIUM, CHROMIUM_ARGS, ConsoleBrowser, missing
from tests.console_support import console_site
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, oidc_provider
from vna.config import OidcGroupSettings, OidcSettings, Settings

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@pytest.fixture
async def sso_console(
    archive_settings: Settings,
) -> AsyncIterator[tuple[ConsoleBrowser, OidcProvider]]:
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with oidc_provider() as idp:
        oidc = OidcSettings(
            issuer=idp.issuer,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            provider_name="Hospital SSO",
            groups=(OidcGroupSettings("radiology-hosp1", "reader", ("HOSP1",)),),
        )
        settings = dataclasses.replace(archive_settings, oidc=oidc)
        async with console_site(settings) as site, async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            harness = ConsoleBrowser(site, browser)
            try:
                yield harness, idp
            finally:
                await browser.close()
            problems = harness.problems()
            assert not problems, "the browser logged errors:\n" + "\n".join(problems)


async def test_a_reader_signs_in_with_sso_from_the_keyboard(
    sso_console: tuple[ConsoleBrowser, OidcProvider],
) -> None:
    console, idp = sso_console
    site = console.site
    idp.user = {"sub": "u-2002", "preferred_username": "tech.h1", "groups": ["radiology-hosp1"]}
    reader = await console.page()
    page = reader.page
    await reader.goto("/ui/signin")
    button = page.get_by_role("link", name="Sign in with Hospital SSO")
    assert await button.is_visible()
    # Keyboard only: tab until the single sign-on link has the focus, then Enter.
    for _ in range(12):
        await page.keyboard.press("Tab")
        if await button.evaluate("el => el === document.activeElement"):
            break
    else:
        raise AssertionError("the single sign-on link cannot be reached with Tab")
    await reader.shot("oidc-01-signin")
    await page.keyboard.press("Enter")
    # Provider, callback, then the page that moves on to the console by itself.
    await page.wait_for_url(f"{site.base}/ui/studies", timeout=15_000)
    header = await page.locator("header").inner_text()
    assert "tech.h1" in header and "(reader)" in header
    assert "Patients" not in header  # admin pages are not offered to a reader
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_load_state()
    main = await page.locator("main").inner_text()
    assert "DOE^JANE" in main and "ROE^RICHARD" not in main
    await reader.shot("oidc-02-studies")
    await reader.goto("/ui/patients", expect_status=403)
    await reader.goto("/ui/studies")
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_load_state()
    assert "/ui/signin" in page.url
    await reader.goto("/ui/studies")
    assert page.url.endswith("/ui/signin")
    async with site.archive.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions") == 0
