"""The compliance console in headless Chromium, against the real gateway app (served over
HTTP, real PostgreSQL and Redis, signed checkpoints) and the real OpenID Provider.

People sign in on the provider's own login form. carol is a cardiology auditor, bob a
radiology tenant_admin, erin a platform_admin who is not an auditor (she reads
every tenant's log but may not erase or hold)
(tests/oidc/clients.json). No model is needed: the chat requests that fill the log run on
the integration stack's fake engine.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from gateway.audit.checkpoints import Verifier
from gateway.console.home import CALLBACK, LOGOUT
from gateway.db.models import ApiKey
from tests.e2e.browser import screenshot, sign_in
from tests.e2e.console_stack import CHAT, ORIGIN, Console, csrf_token

pytestmark = pytest.mark.e2e


async def events(page: Any) -> list[str]:
    """The event column of the results table."""
    cells = page.locator("table.records tbody tr td:nth-child(3)")
    return [text.strip() for text in await cells.all_inner_texts()]


async def search(page: Any, request_id: str) -> list[str]:
    """Search the log for one request id through the form; the events found."""
    await page.fill("#request_id", request_id)
    async with page.expect_navigation():
        await page.click("button:has-text('Search')")
    return await events(page)


async def test_auditor_signs_in_searches_and_sees_a_record_verified(
    console: Console, page: Any
) -> None:
    await sign_in(page, console.url, "carol", "auditor")
    assert page.url == f"{console.url}/console/"
    await screenshot(page, "auditor-home")
    assert await page.get_by_role("link", name="Audit log").count() == 2  # nav and card
    assert await page.get_by_role("link", name="API keys").count() == 0

    await page.get_by_role("navigation").get_by_role("link", name="Audit log").click()
    await page.wait_for_url(f"{console.url}/console/audit/records")
    assert await search(page, console.requests["cardiology"]) == ["accepted", "outcome"]
    await screenshot(page, "auditor-search")
    # Another tenant's request is as absent as one that never happened.
    assert await search(page, console.requests["radiology"]) == []
    assert "No record matches." in await page.locator("table.records").inner_text()

    await search(page, console.requests["cardiology"])
    async with page.expect_navigation():
        await page.locator("table.records tbody tr a").first.click()
    await screenshot(page, "auditor-record")
    badge = page.locator(".badge")
    assert (await badge.inner_text()).startswith("✔ Verified against checkpoint ")
    assert console.requests["cardiology"] in await page.locator("pre.record").inner_text()
    assert await page.locator("ol.proof li").count() >= 1
    looks = [r.target for r in await console.stack.audit_rows() if r.event == "audit"]
    assert "audit:search" in looks  # who watched the watchers: every look is a record
    assert any(target.startswith("audit:record:") for target in looks)


def verify_export(path: Path, verifier: Verifier) -> subprocess.CompletedProcess[str]:
    """``enclave audit verify-export`` as an auditor runs it on the saved file, offline."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify-export", str(path)],
        env={
            **os.environ,
            "ENCLAVE_AUDIT__ORIGIN": ORIGIN,
            "ENCLAVE_AUDIT__VERIFIER_KEY": verifier.key_string,
        },
        capture_output=True,
        text=True,
        check=False,
    )


async def download(page: Any, link: str, into: Path) -> Path:
    """Click the page's link ``link`` and save the file the browser downloads."""
    async with page.expect_download() as started:
        await page.get_by_role("link", name=link).click()
    file = await started.value
    path = into / file.suggested_filename
    await file.save_as(path)
    return path


async def test_auditor_exports_a_search_that_verifies_offline(
    console: Console, page: Any, tmp_path: Path
) -> None:
    await sign_in(page, console.url, "carol", "export")
    await page.goto(f"{console.url}/console/audit/records")
    request_id = console.requests["cardiology"]
    assert await search(page, request_id) == ["accepted", "outcome"]

    exported = await download(page, "JSON Lines with proofs", tmp_path)
    assert exported.name == "audit.jsonl"
    lines = exported.read_text().splitlines()
    assert len(lines) == 3  # the signed checkpoint, then the search's two records
    assert all(request_id in line for line in lines[1:])
    verified = verify_export(exported, console.verifier)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("ok: 2 records verified against checkpoint ")

    with exported.open("r+b") as file:  # one byte of one record's text changed
        data = bytearray(file.read())
        position = data.index(b'\\"status\\":200') + len(b'\\"status\\":2')
        data[position] = ord("1")
        file.seek(0)
        file.write(data)
    tampered = verify_export(exported, console.verifier)
    assert tampered.returncode == 1
    assert "FAILED: leaf_mismatch" in tampered.stdout

    table = await download(page, "CSV", tmp_path)
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert [(r["request_id"], r["event"]) for r in rows] == [
        (request_id, "accepted"),
        (request_id, "outcome"),
    ]
    exports = [r.change for r in await console.stack.audit_rows() if r.target == "audit:export"]
    assert [(e["format"], e["filters"]["request_id"]) for e in exports] == [
        ("jsonl", request_id),
        ("csv", request_id),
    ]


async def sequenced(console: Console) -> int:
    return sum(r.seq is not None for r in await console.stack.audit_rows())


async def verify_on_the_page(page: Any) -> str:
    """Press the integrity page's button; the result it shows."""
    async with page.expect_navigation():
        await page.get_by_role("button", name="Verify the whole log").click()
    return str(await page.locator("#verification").inner_text())


async def progress_shown(page: Any) -> str:
    """Press the verify button with the form's sending stopped in the page (a listener after
    the page's own): what the page says while it waits; the button is then disabled."""
    await page.evaluate(
        "document.querySelector('form.verify')"
        ".addEventListener('submit', (event) => event.preventDefault())"
    )
    await page.get_by_role("button", name="Verify the whole log").click()
    await page.wait_for_function("document.querySelector('form.verify button').disabled")
    return str(await page.locator("form.verify .progress").inner_text())


async def test_auditor_verifies_the_log_on_the_integrity_page(console: Console, page: Any) -> None:
    await sign_in(page, console.url, "carol", "integrity")
    await page.goto(f"{console.url}/console/audit/records")
    await search(page, console.requests["cardiology"])
    async with page.expect_navigation():  # a record's proof signs a checkpoint over the log
        await page.locator("table.records tbody tr a").first.click()
    await page.get_by_role("navigation").get_by_role("link", name="Integrity").click()
    await page.wait_for_url(f"{console.url}/console/audit/integrity")
    newest = page.locator("section.checkpoint").first
    assert await newest.locator(".badge").inner_text() == "✔ Signature valid"
    assert ORIGIN in await newest.locator("pre.note-text").inner_text()
    signature = await newest.locator("ul.signatures li").first.inner_text()
    assert signature.startswith(f"— {ORIGIN} ")  # the C2SP signed-note line, shown as stored

    progress = await progress_shown(page)
    assert re.fullmatch(r"Verifying \d+ records and every checkpoint…", progress), progress
    await page.reload()
    before = await sequenced(console)
    shown = await verify_on_the_page(page)
    await screenshot(page, "auditor-integrity")
    found = re.fullmatch(r"✔ ok: (\d+) records verified, (\d+) checkpoints? checked", shown)
    assert found, shown
    records = int(found[1])
    assert before <= records <= await sequenced(console)
    runs = [r.change for r in await console.stack.audit_rows() if r.target == "audit:verify"]
    assert runs == [{"ok": True, "records": records}]  # the run is itself a record

    async with console.stack.audit_db.begin() as conn:  # one record edited behind the log
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(
            text(
                "UPDATE audit_log SET data = convert_to("
                "replace(convert_from(data, 'UTF8'), :old, :new), 'UTF8') WHERE seq = 0"
            ),
            {"old": '"status":202', "new": '"status":203'},
        )
    shown = await verify_on_the_page(page)
    await screenshot(page, "auditor-integrity-failed")
    assert shown == "✘ FAILED: stored leaf hash differs, first bad record 0"

    async with console.stack.audit_db.begin() as conn:  # the newest checkpoint's size, edited
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(
            text(
                "UPDATE audit_checkpoints SET note = replace(note, :old, :new) "
                "WHERE size = (SELECT max(size) FROM audit_checkpoints)"
            ),
            {"old": f"{ORIGIN}\n", "new": f"{ORIGIN}\n1"},
        )
    await page.goto(f"{console.url}/console/audit/integrity")
    assert await newest.locator(".badge").inner_text() == "✘ Signature does not verify"

    refused = await page.request.post(
        f"{console.url}/console/audit/integrity", form={}, max_redirects=0
    )
    assert refused.status == 403  # no CSRF token, no verification run
    assert len([r for r in await console.stack.audit_rows() if r.target == "audit:verify"]) == 2


async def test_auditor_pages_through_results_and_filters_by_time(
    console: Console, page: Any
) -> None:
    await sign_in(page, console.url, "carol", "pages")
    await page.goto(f"{console.url}/console/audit/records?limit=1")
    assert await events(page) == ["accepted"]  # the log's first record of cardiology
    assert await page.get_by_role("link", name="First page").count() == 0
    async with page.expect_navigation():
        await page.get_by_role("link", name="Next page").click()
    await screenshot(page, "auditor-next-page")
    assert await events(page) == ["outcome"]
    assert console.requests["cardiology"] in await page.locator("table.records").inner_text()
    assert await page.get_by_role("link", name="First page").count() == 1

    await page.goto(f"{console.url}/console/audit/records")
    await page.fill("#since", "2099-01-01T00:00:00")
    async with page.expect_navigation():
        await page.click("button:has-text('Search')")
    assert await events(page) == []
    assert "No record matches." in await page.locator("table.records").inner_text()


async def test_auditor_cannot_reach_admin_pages(console: Console, page: Any) -> None:
    await sign_in(page, console.url, "carol", "no-admin")
    response = await page.goto(f"{console.url}/console/admin/keys")
    assert response is not None
    assert response.status == 403
    await screenshot(page, "auditor-admin-refused")
    assert await page.locator("h1").inner_text() == "Not allowed (403)"
    refusals = [r for r in await console.stack.audit_rows() if r.event == "refused"]
    assert [(r.endpoint, r.status) for r in refusals] == [("/console/admin/keys", 403)]
    refused = await page.request.post(
        f"{console.url}/console/admin/keys/00000000-0000-0000-0000-000000000000/revoke",
        headers={"x-csrf-token": await csrf_token(page, console.url)},
        max_redirects=0,
    )
    assert refused.status == 403  # a forged-free, well-formed change is still not theirs


async def test_a_platform_admin_reads_every_tenants_log_but_acts_on_it_only_as_auditor(
    console: Console, page: Any
) -> None:
    """platform_admin sees everything: erin (platform_admin only, tenant cardiology) finds
    radiology's request too. Erasure and holds need the auditor role as well (separation of
    duties): she is told so, is shown no such form, and is refused by address."""
    await sign_in(page, console.url, "erin", "platform-admin")
    nav = page.get_by_role("navigation")
    assert await nav.get_by_role("link", name="Tenants").count() == 1
    assert await nav.get_by_role("link", name="Audit log").count() == 1
    assert "need the auditor role" in await page.inner_text("main")
    await screenshot(page, "platform-admin-home")
    await nav.get_by_role("link", name="Audit log").click()
    assert await search(page, console.requests["radiology"]) == ["accepted", "outcome"]
    assert await search(page, console.requests["cardiology"]) == ["accepted", "outcome"]
    for path in ("/console/audit/integrity", "/console/audit/subjects"):
        response = await page.goto(console.url + path)
        assert response is not None
        assert response.status == 200, path
    subject = next(
        r.user_id
        for r in await console.stack.audit_rows()
        if r.request_id == console.requests["radiology"] and r.user_id is not None
    )
    await page.goto(f"{console.url}/console/audit/subjects?subject={subject}")
    assert await page.locator("table.records tbody tr").count() >= 1
    assert await page.locator("form.hold, form.erase").count() == 0
    refused = await page.request.post(
        f"{console.url}/console/audit/subjects/{subject}/hold",
        form={"csrf_token": await csrf_token(page, console.url), "reason": "r"},
        max_redirects=0,
    )
    assert refused.status == 403


async def test_posts_without_the_csrf_token_are_refused(console: Console, page: Any) -> None:
    await sign_in(page, console.url, "carol", "csrf")
    logout = f"{console.url}/console/logout"
    for form in ({}, {"csrf_token": "not-the-token"}):
        refused = await page.request.post(logout, form=form, max_redirects=0)
        assert refused.status == 403, form
    home = await page.goto(f"{console.url}/console/")
    await screenshot(page, "still-signed-in")
    assert page.url == f"{console.url}/console/"  # the refused logouts ended nothing
    assert home is not None
    headers = await home.all_headers()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"


async def test_logout_ends_the_session_on_the_server(console: Console, page: Any) -> None:
    await sign_in(page, console.url, "carol", "logout")
    cookies = {c["name"]: c for c in await page.context.cookies() if c["name"].startswith("enc")}
    assert list(cookies) == ["enclave_console"]  # the sign-in's own cookie is gone
    cookie = cookies["enclave_console"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Lax", "/console")
    assert cookie["secure"] is False  # plain http, allowed on loopback only
    assert cookie["expires"] == -1  # a browser-session cookie; the server ends it sooner
    session = cookie["value"]

    async with page.expect_navigation():
        await page.get_by_role("button", name="Sign out").click()
    # Then at the provider, which asks before ending its own session (RP-initiated logout).
    assert not page.url.startswith(console.url), page.url
    await screenshot(page, "provider-sign-out")
    async with page.expect_navigation(url=f"{console.url}/console/signed-out"):
        await page.locator("button[name=logout][value=yes]").click()
    await screenshot(page, "signed-out")
    assert await page.locator("h1").inner_text() == "You are signed out"
    # The old cookie, replayed, opens nothing: the session is gone from the server.
    async with httpx.AsyncClient(base_url=console.url, cookies={"enclave_console": session}) as c:
        replayed = await c.get("/console/audit/records")
    assert replayed.status_code == 303
    assert replayed.headers["location"] == "/console/login"
    # Nor is carol still signed in at the provider: signing in again asks who she is.
    await page.goto(f"{console.url}/console/")
    assert not page.url.startswith(console.url), page.url
    assert await page.locator("input[name=login]").count() == 1

    sessions = [r for r in await console.stack.audit_rows() if r.endpoint in (CALLBACK, LOGOUT)]
    assert [(r.event, r.user_id is not None, r.change) for r in sessions] == [
        ("admin", True, {"action": "sign_in", "issuer": console.issuer}),
        ("admin", True, {"action": "sign_out"}),
    ]
    assert sessions[0].target == sessions[1].target
    assert session not in str(sessions[0].fields)  # named by a digest, never by the cookie


async def test_tenant_admin_creates_a_key_that_works_and_revokes_it(
    console: Console, page: Any
) -> None:
    await sign_in(page, console.url, "bob", "admin")
    assert await page.get_by_role("link", name="Audit log").count() == 0
    assert (await page.goto(f"{console.url}/console/audit/records")).status == 403

    await page.goto(f"{console.url}/console/admin/keys")
    options = await page.locator("#user_id option").all_inner_texts()
    assert options == ["radiology-bot"]  # cardiology's service account is out of reach
    listed = await page.locator("table.keys").inner_text()
    assert console.key_prefixes["radiology"] in listed
    assert console.key_prefixes["cardiology"] not in listed
    refused = await page.goto(f"{console.url}/console/admin/keys/no-such-key/revoke")
    assert refused is not None
    assert refused.status == 405  # a change is never a GET

    await page.goto(f"{console.url}/console/admin/keys")
    await page.fill("#name", "report generator")
    async with page.expect_navigation():
        await page.click("button:has-text('Create key')")
    await screenshot(page, "admin-key-created")
    key = await page.locator("#new-key").input_value()
    assert key.startswith("enc_")
    answered = await console.stack.client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"]

    prefix = key.split("_")[1]
    async with page.expect_navigation():
        await page.get_by_role("button", name=f"Revoke key {prefix}").click()
    await screenshot(page, "admin-key-revoked")
    assert await page.locator("#new-key").count() == 0  # the secret is never shown again
    refused_chat = await console.stack.client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
    )
    assert refused_chat.status_code == 401


async def test_tenant_admin_cannot_reach_another_tenants_keys_or_records_by_url(
    console: Console, page: Any
) -> None:
    async with console.stack.sessions() as session:
        theirs = await session.scalar(
            select(ApiKey).where(ApiKey.prefix == console.key_prefixes["cardiology"])
        )
    assert theirs is not None
    await sign_in(page, console.url, "bob", "boundary")
    token = await csrf_token(page, console.url)
    revoke = await page.request.post(
        f"{console.url}/console/admin/keys/{theirs.id}/revoke",
        headers={"x-csrf-token": token},
        max_redirects=0,
    )
    assert revoke.status == 404  # as absent as a key that never existed
    create = await page.request.post(
        f"{console.url}/console/admin/keys",
        form={"csrf_token": token, "user_id": theirs.user_id, "name": "smuggled"},
        max_redirects=0,
    )
    assert create.status == 404
    await page.goto(f"{console.url}/console/admin/keys")
    assert "smuggled" not in await page.locator("table.keys").inner_text()
    async with console.stack.sessions() as session:
        keys = list(await session.scalars(select(ApiKey).where(ApiKey.user_id == theirs.user_id)))
    assert [(k.id, k.revoked_at) for k in keys] == [(theirs.id, None)]

    seq = next(
        r.seq
        for r in await console.stack.audit_rows()
        if r.request_id == console.requests["cardiology"] and r.seq is not None
    )
    for url in (f"/console/audit/records/{seq}", "/console/audit/export?tenant=cardiology"):
        response = await page.goto(f"{console.url}{url}")
        assert response is not None
        assert response.status == 403, url  # no auditor role: no record of any tenant
    refusals = [r for r in await console.stack.audit_rows() if r.event == "refused"]
    assert [(r.endpoint, r.status) for r in refusals] == [
        ("/console/admin/keys/{id}", 404),
        ("/console/admin/keys", 404),
        ("/console/audit/records/{seq}", 403),
        ("/console/audit/export", 403),
    ]


async def test_auditor_cannot_open_another_tenants_records_by_url(
    console: Console, page: Any
) -> None:
    await sign_in(page, console.url, "carol", "auditor-boundary")
    seq = next(
        r.seq
        for r in await console.stack.audit_rows()
        if r.request_id == console.requests["radiology"] and r.seq is not None
    )
    record = await page.goto(f"{console.url}/console/audit/records/{seq}")
    assert record is not None
    assert record.status == 404  # as absent as a record that never was
    assert console.requests["radiology"] not in await page.content()
    export = await page.goto(f"{console.url}/console/audit/export?tenant=radiology")
    assert export is not None
    assert export.status == 403
    rows = await page.request.get(
        f"{console.url}/console/audit/export?format=csv&request_id={console.requests['radiology']}"
    )
    assert rows.status == 200
    assert list(csv.DictReader(io.StringIO(await rows.text()))) == []
