"""Headless Chromium for the console's browser tests: Debian's ``chromium`` driven by
Playwright for Python (never a browser Playwright downloads).

A missing chromium or playwright fails the tests with the command that installs it; it
never skips them (``.ci/run`` installs chromium, ``make install`` playwright). Screenshots
go to ``tests/e2e/screenshots/`` (git-ignored), one per page a test looks at.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

SCREENSHOTS = Path(__file__).parent / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MAX_PROVIDER_PAGES = 6
TIMEOUT_MS = 15_000


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "chromium is not installed: the console's browser tests need Debian's chromium "
        "(apt-get install -y --no-install-recommends chromium; .ci/run does it)"
    )


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("playwright is not installed: make install (it is a dev dependency)")
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies: nobody signed in anywhere) and its page."""
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"console-{name}.png"), full_page=True)


async def sign_in(page: Any, gateway: str, login: str, shots: str) -> None:
    """Open the console, let it send us to the provider, sign in as ``login`` on its real
    login form (any password), consent, and come back to the console's home page."""
    await page.goto(f"{gateway}/console/")
    for step in range(MAX_PROVIDER_PAGES):
        if page.url.startswith(gateway):
            return
        await screenshot(page, f"{shots}-provider-{step}")
        async with page.expect_navigation():
            if await page.locator("input[name=login]").count():
                await page.fill("input[name=login]", login)
                await page.fill("input[name=password]", "any password")
            await page.click("button[type=submit]")
    raise AssertionError(f"still at {page.url} after {MAX_PROVIDER_PAGES} provider pages")
