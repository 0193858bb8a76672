"""The console's data-subject page in headless Chromium: dora (auditor + platform_admin)
finds alice's records, holds them, is refused erasure under the hold, lifts it and erases;
alice's sealed content is then unreadable through the compliance API while the log still
verifies. carol (a tenant auditor) sees the page but may not act; bob (tenant_admin) may
not see it at all. Every act and every refusal is an audit record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from gateway.audit.sequencer import sequence_batch
from gateway.db.models import Tenant
from tests.e2e.browser import screenshot, sign_in
from tests.e2e.console_stack import Console, csrf_token

pytestmark = pytest.mark.e2e

SUBJECT_ENDPOINT = "/console/audit/subjects/{subject}"
PROMPT = "my records, please forget them"


@dataclass(frozen=True)
class Subject:
    user_id: str
    request_id: str
    officer: str
    """An auditor + platform_admin API key, to check through the compliance API."""


async def subject_with_content(console: Console) -> Subject:
    """alice of cardiology, whose tenant keeps sealed content, after one chat."""
    stack = console.stack
    officer = await stack.key(
        tenant="ops", user="ops-officer", roles=frozenset({"auditor", "platform_admin"})
    )
    async with stack.sessions() as session:
        cardiology = await session.scalar(select(Tenant.id).where(Tenant.name == "cardiology"))
    opted = await stack.client.patch(
        f"/admin/v1/tenants/{cardiology}",
        json={"keep_content": True},
        headers={"Authorization": f"Bearer {officer}"},
    )
    assert opted.status_code == 200, opted.text
    alice = await stack.key(tenant="cardiology", user="alice")
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": PROMPT}]}
    answered = await stack.client.post(
        "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {alice}"}
    )
    assert answered.status_code == 200, answered.text
    request_id = answered.json()["id"]
    while await sequence_batch(stack.audit_db) > 0:
        pass
    user_id = next(r.user_id for r in await stack.audit_rows() if r.request_id == request_id)
    assert user_id is not None
    return Subject(str(user_id), request_id, officer)


async def prompt_of(console: Console, subject: Subject) -> Any:
    """The subject's prompt as the compliance API opens it (None once erased)."""
    auth = {"Authorization": f"Bearer {subject.officer}"}
    listing = await console.stack.client.get(
        "/audit/records",
        params={"request_id": subject.request_id, "event": "accepted"},
        headers=auth,
    )
    (found,) = listing.json()["data"]
    record = await console.stack.client.get(f"/audit/records/{found['seq']}", headers=auth)
    assert record.status_code == 200, record.text
    return record.json()["content"]["prompt"]


async def act(page: Any, button: str, **fields: str) -> Any:
    """Fill the page's fields (by id) and press ``button``; the answer."""
    for field, value in fields.items():
        await page.fill(f"#{field}", value)
    async with page.expect_navigation() as navigated:
        await page.get_by_role("button", name=button).click()
    return await navigated.value


async def test_officer_holds_lifts_and_erases_a_subject(console: Console, page: Any) -> None:
    subject = await subject_with_content(console)
    assert PROMPT in await prompt_of(console, subject)
    await sign_in(page, console.url, "dora", "subjects")
    await page.get_by_role("navigation").get_by_role("link", name="Data subjects").click()
    await page.wait_for_url(f"{console.url}/console/audit/subjects")
    await act(page, "Find records", subject=subject.user_id)
    await screenshot(page, "officer-subject")
    records = page.locator("table.records tbody tr")
    assert await records.count() == 2  # accepted and outcome of alice's one chat
    assert subject.request_id in await page.locator("table.records").inner_text()
    assert await page.locator("#hold").inner_text() == "No legal hold covers this subject."
    async with page.expect_navigation():
        await records.first.get_by_role("link").click()
    assert subject.request_id in await page.locator("pre.record").inner_text()
    await page.go_back()

    await act(page, "Apply a legal hold", **{"hold-reason": "litigation hold 2026-17"})
    await screenshot(page, "officer-subject-held")
    assert await page.locator("#result").inner_text() == "✔ Legal hold applied."
    assert (await page.locator("#hold").inner_text()).startswith("⚖ A legal hold covers")

    await page.check("#confirm")
    refused = await act(
        page,
        "Erase this subject's content",
        **{"erase-reason": "GDPR Art. 17 #12", "confirm_subject": subject.user_id},
    )
    await screenshot(page, "officer-erase-refused")
    assert refused.status == 409
    assert await page.locator("h1").inner_text() == "Not possible now (409)"
    assert PROMPT in await prompt_of(console, subject)

    await page.goto(f"{console.url}/console/audit/subjects?subject={subject.user_id}")
    await act(page, "Lift the legal hold", **{"lift-reason": "case closed"})
    assert await page.locator("#result").inner_text() == "✔ Legal hold lifted."
    await page.check("#confirm")
    erased = await act(
        page,
        "Erase this subject's content",
        **{"erase-reason": "GDPR Art. 17 #12", "confirm_subject": subject.user_id},
    )
    await screenshot(page, "officer-erased")
    assert erased.status == 200
    assert (await page.locator("#result").inner_text()).startswith(
        "✔ Erased: 1 content key shredded"
    )
    assert await page.locator("table.records tbody tr").count() == 2  # the records stay

    assert await prompt_of(console, subject) is None
    verified = await console.stack.client.post(
        "/audit/verify", headers={"Authorization": f"Bearer {subject.officer}"}
    )
    assert verified.json()["ok"] is True, verified.text
    rows = await console.stack.audit_rows()
    acts = [r.change for r in rows if r.target == f"user:{subject.user_id}"]
    assert acts == [
        {"action": "apply_legal_hold", "reason": "litigation hold 2026-17"},
        {"action": "lift_legal_hold", "reason": "case closed"},
        {"action": "erase_subject", "reason": "GDPR Art. 17 #12"},
    ]
    refusals = [(r.endpoint, r.status) for r in rows if r.event == "refused"]
    assert refusals == [(SUBJECT_ENDPOINT, 409)]


async def test_erasure_needs_a_reason_a_confirmation_and_the_csrf_token(
    console: Console, page: Any
) -> None:
    subject = await subject_with_content(console)
    await sign_in(page, console.url, "dora", "subjects-refused")
    token = await csrf_token(page, console.url)
    erase = f"{console.url}/console/audit/subjects/{subject.user_id}/erase"
    confirmed = {"confirm": "yes", "confirm_subject": subject.user_id}
    for form, status in (
        ({"csrf_token": token, "reason": "r", "confirm_subject": subject.user_id}, 400),
        ({"csrf_token": token, "reason": "r", "confirm": "yes", "confirm_subject": "x"}, 400),
        ({"csrf_token": token, **confirmed}, 400),  # no reason
        ({"csrf_token": token, "reason": " ", **confirmed}, 400),
        ({"reason": "r", **confirmed}, 403),  # no CSRF token
    ):
        refused = await page.request.post(erase, form=form, max_redirects=0)
        assert refused.status == status, form
    hold = f"{console.url}/console/audit/subjects/{subject.user_id}/hold"
    refused = await page.request.post(hold, form={"reason": "r"}, max_redirects=0)
    assert refused.status == 403  # no CSRF token, no hold

    assert PROMPT in await prompt_of(console, subject)
    await page.goto(f"{console.url}/console/audit/subjects?subject={subject.user_id}")
    assert await page.locator("#hold").inner_text() == "No legal hold covers this subject."
    rows = await console.stack.audit_rows()
    assert [r for r in rows if r.target == f"user:{subject.user_id}"] == []
    refusals = [(r.endpoint, r.status) for r in rows if r.event == "refused"]
    assert refusals == [(SUBJECT_ENDPOINT, s) for s in (400, 400, 400, 400, 403, 403)]


async def test_only_an_organisation_wide_auditor_acts_and_no_tenant_admin_looks(
    console: Console, page: Any
) -> None:
    subject = await subject_with_content(console)
    await sign_in(page, console.url, "carol", "subjects-tenant-auditor")
    await page.goto(f"{console.url}/console/audit/subjects?subject={subject.user_id}")
    await screenshot(page, "tenant-auditor-subject")
    assert await page.locator("table.records tbody tr").count() == 2
    assert await page.locator("form.hold, form.erase").count() == 0
    token = await csrf_token(page, console.url)
    refused = await page.request.post(
        f"{console.url}/console/audit/subjects/{subject.user_id}/hold",
        form={"csrf_token": token, "reason": "r"},
        max_redirects=0,
    )
    assert refused.status == 403  # the compliance API's rule: auditor and platform_admin

    await page.context.clear_cookies()
    await sign_in(page, console.url, "bob", "subjects-admin")
    assert await page.get_by_role("link", name="Data subjects").count() == 0
    for url in ("/console/audit/subjects", f"/console/audit/subjects?subject={subject.user_id}"):
        response = await page.goto(f"{console.url}{url}")
        assert response is not None
        assert response.status == 403, url
    await screenshot(page, "admin-subjects-refused")
    assert await page.locator("h1").inner_text() == "Not allowed (403)"
    rows = await console.stack.audit_rows()
    assert [r for r in rows if r.target == f"user:{subject.user_id}"] == []
    refusals = [(r.endpoint, r.status) for r in rows if r.event == "refused"]
    assert refusals == [
        (SUBJECT_ENDPOINT, 403),
        ("/console/audit/subjects", 403),
        ("/console/audit/subjects", 403),
    ]
