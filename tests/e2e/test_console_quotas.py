"""The console's quotas pages in headless Chromium, against the real gateway app, its
Redis counters and the real OpenID Provider.

bob (radiology tenant_admin) sees his tenant's tokens today equal to what the API reported
and a bar for the current hour, sets the default per user in the form and the API then
enforces it; he may not set the tenant's total nor see or change cardiology's. dora
(platform_admin) sets a tenant's total; carol (an auditor) may not open the page. Every
change is an ``admin`` record, every refusal a ``refused`` one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from gateway.db.models import Limit, Tenant
from tests.e2e.browser import screenshot, sign_in
from tests.e2e.console_stack import CHAT, Console, csrf_token

pytestmark = pytest.mark.e2e

QUOTAS = "/console/admin/quotas"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def number(text: str) -> int:
    return int(text.strip().split()[0].replace(",", ""))


async def tenant_id(console: Console, name: str) -> str:
    async with console.stack.sessions() as session:
        found = await session.scalar(select(Tenant.id).where(Tenant.name == name))
    assert found is not None
    return found


async def limits_row(console: Console, kind: str, scope_id: str) -> dict[str, Any] | None:
    async with console.stack.sessions() as session:
        row = await session.get(Limit, (kind, scope_id))
        if row is None:
            return None
        return {
            "requests_per_minute": row.requests_per_minute,
            "tokens_per_day": row.tokens_per_day,
        }


async def limit_changes(console: Console) -> list[Any]:
    """The ``admin`` records of limits set (sign-ins are ``admin`` records too)."""
    rows = await console.stack.audit_rows()
    return [r for r in rows if r.event == "admin" and r.change["action"] == "set_limits"]


async def recorded_tokens(console: Console, request_id: str) -> int:
    """The tokens a request's outcome record says it used."""
    (outcome,) = [
        r
        for r in await console.stack.audit_rows()
        if r.request_id == request_id and r.event == "outcome"
    ]
    return int(outcome.prompt_tokens + outcome.completion_tokens)


async def chats(console: Console, key: str) -> int:
    """Three chats, one streamed; the sum of the usage.total_tokens the API reported."""
    total = 0
    for body in (CHAT, CHAT | {"max_tokens": 3}):
        answered = await console.stack.client.post(
            "/v1/chat/completions", json=body, headers=auth(key)
        )
        assert answered.status_code == 200, answered.text
        total += answered.json()["usage"]["total_tokens"]
    streamed = await console.stack.client.post(
        "/v1/chat/completions",
        json=CHAT | {"stream": True, "stream_options": {"include_usage": True}},
        headers=auth(key),
    )
    assert streamed.status_code == 200, streamed.text
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: {")]
    total += json.loads(events[-1])["usage"]["total_tokens"]
    return total


async def bars(page: Any) -> dict[str, int]:
    """The chart's bars: hour (YYYY-MM-DDTHH) -> tokens, as drawn."""
    drawn = page.locator("svg.chart rect.bar")
    hours = [await drawn.nth(i).get_attribute("data-hour") for i in range(await drawn.count())]
    tokens = [await drawn.nth(i).get_attribute("data-tokens") for i in range(len(hours))]
    return {str(hour): int(str(value)) for hour, value in zip(hours, tokens, strict=True)}


async def test_tenant_admin_sees_todays_usage_and_sets_a_default_the_api_enforces(
    console: Console, page: Any
) -> None:
    radiology = await tenant_id(console, "radiology")
    key = await console.stack.key(tenant="radiology", user="radiology-bot")
    started = datetime.now(UTC)
    reported = await chats(console, key)
    expected = reported + await recorded_tokens(console, console.requests["radiology"])

    await sign_in(page, console.url, "bob", "quotas")
    await page.get_by_role("navigation").get_by_role("link", name="Quotas").click()
    await page.wait_for_url(f"{console.url}{QUOTAS}")
    await screenshot(page, "admin-quotas")
    rows = page.locator("table.quotas tbody tr")
    assert await rows.locator("th").all_inner_texts() == ["radiology"]  # no cardiology
    listed_today = number(await rows.locator("td.tokens-today").inner_text())

    async with page.expect_navigation():
        await page.get_by_role("link", name="radiology", exact=True).click()
    assert page.url == f"{console.url}{QUOTAS}/{radiology}"
    await screenshot(page, "admin-quota-tenant")
    shown_today = number(await page.locator("#usage-tokens_per_day td.used").inner_text())
    drawn = await bars(page)
    finished = datetime.now(UTC)
    assert len(drawn) == 24
    assert sum(drawn.values()) == expected  # everything radiology used, hour by hour
    await page.get_by_text("The same as a table").press("Enter")  # the chart's numbers
    assert await page.locator("table.hours").is_visible()
    hours = [
        int(cell.replace(",", "")) for cell in await page.locator("td.tokens").all_inner_texts()
    ]
    assert sum(hours) == expected  # the table says what the chart draws
    current = page.locator("svg.chart rect.bar.current")
    assert await current.count() == 1
    assert await current.get_attribute("data-hour") in {
        f"{started:%Y-%m-%dT%H}",
        f"{finished:%Y-%m-%dT%H}",
    }
    if f"{started:%Y-%m-%dT%H}" == f"{finished:%Y-%m-%dT%H}":  # no hour ended meanwhile
        assert int(str(await current.get_attribute("data-tokens"))) >= reported
        assert float(str(await current.get_attribute("height"))) > 0
    if started.date() == finished.date():  # no UTC midnight meanwhile
        assert listed_today == shown_today == expected

    await page.fill("#tenant_user_default-requests_per_minute", "2")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Save the default per user").click()
    await screenshot(page, "admin-quota-saved")
    assert await page.get_by_role("status").inner_text() == (
        "The default per user is saved; it holds from the next request."
    )
    assert await page.input_value("#tenant_user_default-requests_per_minute") == "2"
    answers = [
        await console.stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    error = answers[2].json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("rate_limit_exceeded", "requests_per_minute")
    assert answers[0].headers["x-ratelimit-limit-requests"] == "2"

    changes = await limit_changes(console)
    assert [(r.endpoint, r.target, r.change["action"]) for r in changes] == [
        (f"{QUOTAS}/{{id}}/{{kind}}", f"tenant_user_default:{radiology}", "set_limits")
    ]
    assert changes[0].change["old"] is None
    assert changes[0].change["new"]["requests_per_minute"] == 2
    assert changes[0].change["new"]["tokens_per_day"] is None


async def test_tenant_admin_may_not_set_the_total_nor_reach_another_tenant(
    console: Console, page: Any
) -> None:
    radiology = await tenant_id(console, "radiology")
    cardiology = await tenant_id(console, "cardiology")
    await sign_in(page, console.url, "bob", "quota-boundary")
    await page.goto(f"{console.url}{QUOTAS}/{radiology}")
    assert await page.locator(f"form[action='{QUOTAS}/{radiology}/tenant']").count() == 0
    assert "Only a platform_admin sets a tenant's total." in await page.inner_text("main")
    token = await csrf_token(page, console.url)

    total = await page.request.post(
        f"{console.url}{QUOTAS}/{radiology}/tenant",
        form={"csrf_token": token, "tokens_per_day": "5"},
        max_redirects=0,
    )
    assert total.status == 403
    assert "Only a platform_admin may set a tenant&#39;s total limits." in await total.text()

    theirs = await page.goto(f"{console.url}{QUOTAS}/{cardiology}")
    assert theirs is not None
    assert theirs.status == 404  # as absent as a tenant that never existed
    await screenshot(page, "admin-quota-other-tenant")
    assert "cardiology" not in await page.inner_text("main")
    changed = await page.request.post(
        f"{console.url}{QUOTAS}/{cardiology}/tenant_user_default",
        form={"csrf_token": token, "requests_per_minute": "1"},
        max_redirects=0,
    )
    assert changed.status == 404

    unsigned = await page.request.post(
        f"{console.url}{QUOTAS}/{radiology}/tenant_user_default",
        form={"requests_per_minute": "1"},
        max_redirects=0,
    )
    assert unsigned.status == 403  # no CSRF token
    for bad in ("-5", "ten", "1.5", "99999999999", str(2**31)):
        refused = await page.request.post(
            f"{console.url}{QUOTAS}/{radiology}/tenant_user_default",
            form={"csrf_token": token, "requests_per_minute": bad},
            max_redirects=0,
        )
        assert refused.status == 400, bad
        assert "whole number" in await refused.text(), bad
    await page.goto(f"{console.url}{QUOTAS}/{radiology}")
    await screenshot(page, "admin-quota-refusals")

    for kind in ("tenant", "tenant_user_default"):
        assert await limits_row(console, kind, radiology) is None
        assert await limits_row(console, kind, cardiology) is None
    assert await limit_changes(console) == []
    refusals = [
        (r.endpoint, r.status) for r in await console.stack.audit_rows() if r.event == "refused"
    ]
    form = f"{QUOTAS}/{{id}}/{{kind}}"
    assert refusals == [
        (form, 403),
        (f"{QUOTAS}/{{id}}", 404),
        (form, 404),
        (form, 403),
        *[(form, 400)] * 5,
    ]


async def test_platform_admin_sets_a_tenants_total(console: Console, page: Any) -> None:
    radiology = await tenant_id(console, "radiology")
    await sign_in(page, console.url, "dora", "quota-platform")
    await page.goto(f"{console.url}{QUOTAS}")
    names = await page.locator("table.quotas tbody tr th").all_inner_texts()
    assert "cardiology" in names
    assert "radiology" in names
    await page.goto(f"{console.url}{QUOTAS}/{radiology}")
    await page.fill("#tenant-tokens_per_day", "1000000")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Save the tenant total").click()
    await screenshot(page, "platform-quota-total")
    assert await page.get_by_role("status").inner_text() == (
        "The tenant's total is saved; it holds from the next request."
    )
    row = page.locator("#usage-tokens_per_day")
    assert number(await row.locator("td.limit").inner_text()) == 1_000_000
    assert number(await row.locator("td.used").inner_text()) == 0  # counted from now on
    used = await recorded_tokens(console, console.requests["radiology"])
    assert f"requests that ended today used {used}" in await row.inner_text()
    assert await limits_row(console, "tenant", radiology) == {
        "requests_per_minute": None,
        "tokens_per_day": 1_000_000,
    }
    changes = await limit_changes(console)
    assert [(r.target, r.change["new"]["tokens_per_day"]) for r in changes] == [
        (f"tenant:{radiology}", 1_000_000)
    ]


async def test_an_auditor_cannot_reach_the_quotas_pages(console: Console, page: Any) -> None:
    radiology = await tenant_id(console, "radiology")
    cardiology = await tenant_id(console, "cardiology")
    await sign_in(page, console.url, "carol", "quota-auditor")
    assert await page.get_by_role("link", name="Quotas").count() == 0
    for url in (QUOTAS, f"{QUOTAS}/{cardiology}"):
        response = await page.goto(f"{console.url}{url}")
        assert response is not None
        assert response.status == 403, url
    await screenshot(page, "auditor-quotas-refused")
    changed = await page.request.post(
        f"{console.url}{QUOTAS}/{cardiology}/tenant_user_default",
        form={"csrf_token": await csrf_token(page, console.url), "requests_per_minute": "1"},
        max_redirects=0,
    )
    assert changed.status == 403
    assert await limits_row(console, "tenant_user_default", cardiology) is None
    assert await limits_row(console, "tenant_user_default", radiology) is None
