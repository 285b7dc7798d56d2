"""The harness of the web console's browser tests: Debian's headless Chromium driven by
playwright (no browser is downloaded), against the console served in-process
(tests/console_support.py: two hospitals, an admin token, a reader of HOSP1 only).

A test takes the ``console`` fixture and opens pages with :meth:`ConsoleBrowser.page`, signed
in with a token.  Any console error or failed request the page logs, and any uncaught
exception, fails the test at the end (the ``bad`` list); :meth:`ConsolePage.shot` saves a
full-page screenshot under ``test-artifacts/console/`` (VNA_TEST_ARTIFACTS overrides the
directory; git-ignored) for the run's artefacts and the README.

Confirmation dialogs of ``data-confirm`` forms are accepted (a test stands for a user who
clicks OK).  Tests skip with the reason when chromium or playwright is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.console_support import ConsoleSite, console_site
from vna.config import Settings

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(os.environ.get("VNA_TEST_ARTIFACTS", REPO / "test-artifacts")) / "console"
#: A laptop screen; tests may open a tablet-sized page too.
LAPTOP = {"width": 1366, "height": 900}
TABLET = {"width": 820, "height": 1180}


def missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return "chromium is not installed (apt-get install chromium; .ci/run does as root)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (the test extras)"
    return None


@dataclass
class ConsolePage:
    """A browser page of the console, signed in (or not), recording what went wrong."""

    page: Any
    site: ConsoleSite
    bad: list[str] = field(default_factory=list)
    #: Console messages as (type, text, url of the resource), judged at the end.
    messages: list[tuple[str, str, str]] = field(default_factory=list)
    #: URLs the test expected to be refused (4xx): their "Failed to load resource" is no fault.
    refused: set[str] = field(default_factory=set)

    async def goto(self, path: str, *, expect_status: int | tuple[int, ...] | None = None) -> Any:
        """Open a console path (``/ui/...``); the response.  ``expect_status`` (a 4xx) is the
        refusal the test expects, which the browser logs as a console error."""
        url = self.site.base + path
        if expect_status is not None:
            self.refused.add(url)
        response = await self.page.goto(url)
        if expect_status is not None:
            wanted = expect_status if isinstance(expect_status, tuple) else (expect_status,)
            assert response.status in wanted, (path, response.status)
        return response

    def problems(self) -> list[str]:
        found = list(self.bad)
        for kind, text, url in self.messages:
            if kind != "error":
                continue
            if text.startswith("Failed to load resource") and url in self.refused:
                continue
            found.append(f"console error: {text} ({url})")
        return found

    async def sign_in(self, token: str) -> None:
        await self.goto("/ui/signin")
        await self.page.get_by_label("API token").fill(token)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.wait_for_load_state()
        assert "/ui/signin" not in self.page.url, await self.page.content()

    async def audit_actions(self, **fields: str) -> set[str]:
        """The actions the console's audit page lists for these criteria (by field label)."""
        await self.goto("/ui/audit")
        for label, value in fields.items():
            await self.page.get_by_label(label, exact=True).fill(value)
        await self.page.get_by_role("button", name="Search").click()
        await self.page.wait_for_load_state()
        cells = self.page.locator("table tbody tr td:nth-child(4)")
        return {text.strip() for text in await cells.all_inner_texts()}

    async def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@dataclass
class ConsoleBrowser:
    site: ConsoleSite
    browser: Any
    pages: list[ConsolePage] = field(default_factory=list)

    async def page(
        self, token: str | None = None, viewport: dict[str, int] = LAPTOP
    ) -> ConsolePage:
        """A new page (its own cookies), signed in with ``token`` when given."""
        context = await self.browser.new_context(viewport=viewport)
        page = await context.new_page()
        opened = ConsolePage(page, self.site)
        origin = self.site.base
        page.on(
            "console",
            lambda m: opened.messages.append((m.type, m.text, m.location.get("url", ""))),
        )
        page.on("pageerror", lambda e: opened.bad.append(f"page error: {e}"))
        page.on(
            "requestfailed",
            lambda r: (
                opened.bad.append(f"failed {r.method} {r.url}: {r.failure}")
                # A load the next navigation cancelled (a favicon, the script of the page left)
                # is no fault a user sees.
                if r.url.startswith(origin) and "ERR_ABORTED" not in (r.failure or "")
                else None
            ),
        )
        page.on("dialog", lambda d: d.accept())
        self.pages.append(opened)
        if token is not None:
            await opened.sign_in(token)
        return opened

    def problems(self) -> list[str]:
        return [problem for p in self.pages for problem in p.problems()]


@pytest.fixture
async def console(archive_settings: Settings) -> AsyncIterator[ConsoleBrowser]:
    """The console served in-process and a headless Chromium; fails the test on any console
    error a page logged."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with console_site(archive_settings) as site, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        harness = ConsoleBrowser(site, browser)
        try:
            yield harness
        finally:
            await browser.close()
        problems = harness.problems()
        assert not problems, "the browser logged errors:\n" + "\n".join(problems)
