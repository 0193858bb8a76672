"""Every console page checked for accessibility faults by axe-core (WCAG 2.1 A and AA:
labels, names, contrast, landmarks, headings, ARIA), and the audit search used with the
keyboard alone.

dora (an auditor who is also platform_admin) sees every page; the sign-in, signed-out and
error pages are checked too. axe-core comes bundled in the axe-playwright-python wheel
(nothing is fetched at run time) and is evaluated through the browser's devtools channel,
which the console's Content-Security-Policy does not govern.
"""

from __future__ import annotations

from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe  # type: ignore[import-untyped]
from sqlalchemy import select

from gateway.db.models import Tenant, User
from tests.e2e.browser import screenshot, sign_in
from tests.e2e.console_stack import Console

pytestmark = pytest.mark.e2e

WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
MAX_TABS = 60


async def faults(page: Any) -> list[str]:
    """axe-core's WCAG violations on the page as it is now: rule, impact, where."""
    results = await Axe().run(page, options={**WCAG, "resultTypes": ["violations"]})
    return [
        f"{v['id']} ({v['impact']}): {', '.join(str(n['target']) for n in v['nodes'])}"
        for v in results.response["violations"]
    ]


async def ids(console: Console) -> dict[str, str]:
    async with console.stack.sessions() as session:
        tenant = await session.scalar(select(Tenant.id).where(Tenant.name == "radiology"))
        user = await session.scalar(select(User.id).where(User.name == "cardiology-bot"))
    assert tenant
    assert user
    return {"tenant": tenant, "user": user}


async def test_every_console_page_passes_axe(console: Console, page: Any) -> None:
    found = await ids(console)
    await sign_in(page, console.url, "dora", "a11y")
    pages = [
        "/console/",
        f"/console/audit/records?request_id={console.requests['cardiology']}",
        "/console/audit/records/0",
        "/console/audit/integrity",
        f"/console/audit/subjects?subject={found['user']}",
        "/console/admin/tenants",
        f"/console/admin/tenants/{found['tenant']}/models",
        "/console/admin/users",
        f"/console/admin/users/{found['user']}",
        "/console/admin/keys",
        "/console/admin/quotas",
        f"/console/admin/quotas/{found['tenant']}",
        "/console/admin/users/no-such-user",  # the error page
        "/console/signed-out",
    ]
    report = {}
    for number, path in enumerate(pages):
        await page.goto(console.url + path)
        assert page.url.startswith(console.url), (path, page.url)
        await screenshot(page, f"a11y-{number}")
        report[path] = await faults(page)
    assert {path: found for path, found in report.items() if found} == {}


async def test_the_audit_search_works_from_the_keyboard_alone(console: Console, page: Any) -> None:
    await sign_in(page, console.url, "carol", "keyboard")
    await page.goto(f"{console.url}/console/audit/records")
    await page.keyboard.press("Tab")
    skip = await page.evaluate("document.activeElement.textContent")
    assert skip == "Skip to main content"  # the first stop: past the menu in one key
    await page.keyboard.press("Enter")
    for _ in range(MAX_TABS):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "request_id":
            break
    else:
        raise AssertionError("Tab never reached the request id field")
    await page.keyboard.type(console.requests["cardiology"])
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await screenshot(page, "keyboard-search")
    rows = page.locator("table.records tbody tr")
    assert await rows.count() == 2  # the request's accepted and outcome records
    # Focus shows where it is: the focused link gets an outline of its own.
    for _ in range(MAX_TABS):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.closest('table.records') !== null"):
            break
    else:
        raise AssertionError("Tab never reached the results")
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
