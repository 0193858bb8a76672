"""The console's tenants, users and model access pages in headless Chromium, against the
real gateway app and the real OpenID Provider (tests/e2e/console_stack.py).

dora (platform_admin) creates and disables tenants and sets a tenant's model access; the
tenant's keys follow on ``/v1/chat/completions``. bob (radiology's tenant_admin) creates a
service account, grants it a role, disables and enables it; he reads his tenant's model
access but may not widen it, and nothing of cardiology is his to see or change. carol (an
auditor) reaches none of these pages. Every change is the admin API's ``admin`` record.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.db.models import Tenant, User
from tests.e2e.browser import screenshot, sign_in
from tests.e2e.console_stack import CHAT, Console, csrf_token

pytestmark = pytest.mark.e2e

TENANT_ENDPOINT = "/console/admin/tenants/{id}"
MODELS_ENDPOINT = "/console/admin/tenants/{id}/models"
USER_ENDPOINT = "/console/admin/users/{id}"
DISABLED = {"old": False, "new": True}
ENABLED = {"old": True, "new": False}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def chat(console: Console, key: str) -> httpx.Response:
    return await console.stack.client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))


async def platform_key(console: Console) -> str:
    """A platform_admin's API key (tenant ops), to look through the admin API."""
    return await console.stack.key(
        tenant="ops", user="ops-admin", roles=frozenset({"platform_admin"})
    )


async def tenant_id(console: Console, name: str) -> str:
    async with console.stack.sessions() as session:
        found = await session.scalar(select(Tenant.id).where(Tenant.name == name))
    assert found is not None, name
    return found


async def user_row(console: Console, tenant: str, name: str) -> User:
    async with console.stack.sessions() as session:
        found = await session.scalar(
            select(User)
            .join(Tenant, Tenant.id == User.tenant_id)
            .where(Tenant.name == tenant, User.name == name)
        )
    assert found is not None, (tenant, name)
    return found


async def admin_changes(console: Console) -> list[tuple[str, str, dict[str, Any]]]:
    """The ``admin`` records of changes so far (sign-ins, ``admin`` records too, left out):
    endpoint, target, change."""
    rows = await console.stack.audit_rows()
    return [
        (r.endpoint, r.target, r.change)
        for r in rows
        if r.event == "admin" and not r.target.startswith("console_session:")
    ]


async def refusals(console: Console) -> list[tuple[str, int]]:
    return [
        (r.endpoint, r.status) for r in await console.stack.audit_rows() if r.event == "refused"
    ]


async def press(page: Any, button: str) -> Any:
    """Press the page's ``button`` and wait for the page it leads to; that page's answer."""
    async with page.expect_navigation() as navigated:
        await page.get_by_role("button", name=button).click()
    return await navigated.value


async def column(page: Any, table: str, index: int) -> list[str]:
    cells = page.locator(f"table.{table} tbody tr td:nth-child({index})")
    return [cell.strip() for cell in await cells.all_inner_texts()]


async def test_platform_admin_creates_a_tenant_and_disables_it(console: Console, page: Any) -> None:
    root = await platform_key(console)
    await sign_in(page, console.url, "dora", "tenants")
    await page.get_by_role("navigation").get_by_role("link", name="Tenants").click()
    await page.wait_for_url(f"{console.url}/console/admin/tenants")
    assert await column(page, "tenants", 1) == ["cardiology", "ops", "radiology"]

    await page.fill("#name", " oncology ")
    await press(page, "Create tenant")
    await screenshot(page, "platform-admin-tenants")
    assert await column(page, "tenants", 1) == ["cardiology", "oncology", "ops", "radiology"]
    listed = await console.stack.client.get("/admin/v1/tenants", headers=bearer(root))
    oncology = next(t for t in listed.json()["data"] if t["name"] == "oncology")
    assert (oncology["is_disabled"], oncology["allowed_models"]) == (False, None)

    again = await page.request.post(
        f"{console.url}/console/admin/tenants",
        form={"csrf_token": await csrf_token(page, console.url), "name": "oncology"},
        max_redirects=0,
    )
    assert again.status == 409
    assert "A tenant named &#39;oncology&#39; exists already." in await again.text()
    blank = await page.request.post(
        f"{console.url}/console/admin/tenants",
        form={"csrf_token": await csrf_token(page, console.url), "name": "  "},
        max_redirects=0,
    )
    assert blank.status == 400

    radiology_key = await console.stack.key(tenant="radiology", user="radiology-bot")
    assert (await chat(console, radiology_key)).status_code == 200
    await page.goto(f"{console.url}/console/admin/tenants")
    # dora's own tenant offers no Disable: the API refuses that to her.
    assert await page.get_by_role("button", name="Disable tenant cardiology").count() == 0
    await press(page, "Disable tenant radiology")
    await screenshot(page, "platform-admin-tenant-disabled")
    assert "disabled" in await page.locator("table.tenants tr", has_text="radiology").inner_text()
    assert (await chat(console, radiology_key)).status_code == 401
    await press(page, "Enable tenant radiology")
    assert (await chat(console, radiology_key)).status_code == 200

    radiology = await tenant_id(console, "radiology")
    own = await page.request.post(
        f"{console.url}/console/admin/tenants/{await tenant_id(console, 'cardiology')}/state",
        form={"csrf_token": await csrf_token(page, console.url), "is_disabled": "true"},
        max_redirects=0,
    )
    assert own.status == 403
    oncology_target, radiology_target = f"tenant:{oncology['id']}", f"tenant:{radiology}"
    assert await admin_changes(console) == [
        (
            "/console/admin/tenants",
            oncology_target,
            {"action": "create_tenant", "name": "oncology"},
        ),
        (TENANT_ENDPOINT, radiology_target, {"action": "update_tenant", "is_disabled": DISABLED}),
        (TENANT_ENDPOINT, radiology_target, {"action": "update_tenant", "is_disabled": ENABLED}),
    ]
    assert await refusals(console) == [
        ("/console/admin/tenants", 409),
        ("/console/admin/tenants", 400),
        ("/v1/chat/completions", 401),
        (TENANT_ENDPOINT, 403),
    ]


async def test_platform_admin_sets_model_access_and_the_tenants_keys_follow(
    console: Console, page: Any
) -> None:
    root = await platform_key(console)
    radiology_key = await console.stack.key(tenant="radiology", user="radiology-bot")
    cardiology_key = await console.stack.key(tenant="cardiology", user="cardiology-bot")
    radiology = await tenant_id(console, "radiology")
    access_api = f"/admin/v1/tenants/{radiology}/models"
    await sign_in(page, console.url, "dora", "models")
    await page.goto(f"{console.url}/console/admin/tenants")
    async with page.expect_navigation():
        await page.get_by_role("link", name="Model access of radiology").click()
    assert page.url == f"{console.url}/console/admin/tenants/{radiology}/models"
    assert await page.get_by_label("fake-model").is_checked()
    assert await page.get_by_label("Every model, now and later").is_checked()

    await page.get_by_label("Only the models ticked below").check()
    await page.get_by_label("fake-model").uncheck()
    await page.fill("#other_model", "other-model")
    await press(page, "Save model access")
    await screenshot(page, "platform-admin-models")
    assert await page.locator("#access").inner_text() == "radiology may use other-model only."
    assert await page.get_by_label("other-model").is_checked()  # granted, though not served
    refused = await chat(console, radiology_key)
    assert refused.status_code == 404
    assert refused.json() == {
        "error": {
            "message": "The model `fake-model` does not exist or is not being served.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    models = await console.stack.client.get("/v1/models", headers=bearer(radiology_key))
    assert models.json()["data"] == []
    assert (await chat(console, cardiology_key)).status_code == 200  # other tenants keep theirs
    shown = await console.stack.client.get(access_api, headers=bearer(root))
    assert shown.json()["models"] == ["other-model"]

    await page.get_by_label("fake-model").check()
    await page.get_by_label("other-model").uncheck()
    await press(page, "Save model access")
    assert (await chat(console, radiology_key)).status_code == 200
    await page.get_by_label("Every model, now and later").check()
    await press(page, "Save model access")
    assert (await page.locator("#access").inner_text()).startswith("radiology may use every model")
    every = await console.stack.client.get(access_api, headers=bearer(root))
    assert every.json()["models"] is None

    assert await admin_changes(console) == [
        (
            MODELS_ENDPOINT,
            f"tenant:{radiology}",
            {"action": "set_model_access", "allowed_models": c},
        )
        for c in (
            {"old": None, "new": ["other-model"]},
            {"old": ["other-model"], "new": ["fake-model"]},
            {"old": ["fake-model"], "new": None},
        )
    ]
    token = await csrf_token(page, console.url)
    models_page = f"{console.url}/console/admin/tenants/{radiology}/models"
    for form in ({"csrf_token": token}, {"csrf_token": token, "access": "some"}):
        bad = await page.request.post(models_page, form=form, max_redirects=0)
        assert bad.status == 400, form
        assert "Choose one of every, listed for access." in await bad.text()


async def test_tenant_admin_reads_model_access_but_may_not_widen_it(
    console: Console, page: Any
) -> None:
    radiology_key = await console.stack.key(tenant="radiology", user="radiology-bot")
    radiology = await tenant_id(console, "radiology")
    root = await platform_key(console)
    narrowed = await console.stack.client.put(
        f"/admin/v1/tenants/{radiology}/models", json={"models": []}, headers=bearer(root)
    )
    assert narrowed.status_code == 200, narrowed.text
    await sign_in(page, console.url, "bob", "tenant-admin-models")
    await page.get_by_role("navigation").get_by_role("link", name="Tenants").click()
    await page.wait_for_url(f"{console.url}/console/admin/tenants")
    await screenshot(page, "tenant-admin-tenants")
    assert await column(page, "tenants", 1) == ["radiology"]
    assert await page.locator("form").count() == 1  # sign-out only: no create, no disable
    async with page.expect_navigation():
        await page.get_by_role("link", name="Model access of radiology").click()
    await screenshot(page, "tenant-admin-models")
    assert await page.locator("#access").inner_text() == "radiology may use no model."
    assert await page.get_by_role("button", name="Save model access").count() == 0
    assert await column(page, "models", 2) == ["no"]  # fake-model, served, not allowed

    refused = await page.request.post(
        f"{console.url}/console/admin/tenants/{radiology}/models",
        form={"csrf_token": await csrf_token(page, console.url), "access": "every"},
        max_redirects=0,
    )
    assert refused.status == 403
    assert "Only a platform_admin may change a tenant&#39;s model access." in await refused.text()
    async with console.stack.sessions() as session:
        tenant = await session.get(Tenant, radiology)
    assert tenant is not None
    assert tenant.allowed_models == []
    assert (await chat(console, radiology_key)).status_code == 404
    assert [change for _, _, change in await admin_changes(console)] == [
        {"action": "set_model_access", "allowed_models": {"old": None, "new": []}},  # the API's
    ]
    assert (MODELS_ENDPOINT, 403) in await refusals(console)


async def test_tenant_admin_manages_service_accounts_and_roles_in_the_browser(
    console: Console, page: Any
) -> None:
    bot_key = await console.stack.key(tenant="radiology", user="radiology-bot")
    bot = await user_row(console, "radiology", "radiology-bot")
    root = await platform_key(console)
    assert (
        await console.stack.client.get("/audit/records", headers=bearer(bot_key))
    ).status_code == 403
    await sign_in(page, console.url, "bob", "users")
    await page.get_by_role("navigation").get_by_role("link", name="Users").click()
    await page.wait_for_url(f"{console.url}/console/admin/users")
    await screenshot(page, "tenant-admin-users")
    assert await column(page, "users", 1) == ["bob", "radiology-bot"]
    assert (await column(page, "users", 2))[0].startswith("sign-in at http")
    assert await column(page, "users", 3) == ["tenant_admin", "—"]  # roles from the provider

    await page.fill("#name", "pacs-exporter")
    await press(page, "Create service account")
    await screenshot(page, "tenant-admin-service-account")
    exporter = await user_row(console, "radiology", "pacs-exporter")
    assert page.url == f"{console.url}/console/admin/users/{exporter.id}"
    listed = await console.stack.client.get(
        "/admin/v1/users", params={"tenant_id": bot.tenant_id}, headers=bearer(root)
    )
    is_local = {u["name"]: u["issuer"] is None for u in listed.json()["data"]}
    assert is_local == {"bob": False, "pacs-exporter": True, "radiology-bot": True}

    await page.goto(f"{console.url}/console/admin/users")
    async with page.expect_navigation():
        await page.get_by_role("link", name="radiology-bot").click()
    assert await page.locator("#role-platform_admin").count() == 0  # not bob's to grant
    await page.get_by_label("auditor").check()
    await press(page, "Save granted roles")
    await screenshot(page, "tenant-admin-user")
    assert await page.locator("#roles").inner_text() == "auditor, user"
    shown = await console.stack.client.get(f"/admin/v1/users/{bot.id}", headers=bearer(root))
    assert (shown.json()["granted_roles"], shown.json()["roles"]) == (
        ["auditor"],
        ["auditor", "user"],
    )
    audit = await console.stack.client.get("/audit/records", headers=bearer(bot_key))
    assert audit.status_code == 200, audit.text  # the key acts with its user's new role

    await press(page, "Disable this user")
    assert await page.locator("#state").inner_text() == "disabled"
    assert (await chat(console, bot_key)).status_code == 401
    await press(page, "Enable this user")
    assert (await chat(console, bot_key)).status_code == 200

    bob = await user_row(console, "radiology", "bob")
    await page.goto(f"{console.url}/console/admin/users/{bob.id}")
    assert await page.locator("form.roles, form.state").count() == 0
    assert "another administrator must" in await page.locator("#why-read-only").inner_text()
    assert await page.locator("#idp-roles").inner_text() == "tenant_admin"
    token = await csrf_token(page, console.url)
    for path, form, status in (
        (f"/console/admin/users/{bob.id}/roles", {"granted_roles": "auditor"}, 403),  # his own
        (f"/console/admin/users/{bot.id}/roles", {"granted_roles": "superuser"}, 400),
        (f"/console/admin/users/{bot.id}/roles", {"granted_roles": "platform_admin"}, 403),
        (f"/console/admin/users/{bot.id}/state", {"is_disabled": "maybe"}, 400),
        ("/console/admin/users", {"name": "radiology-bot"}, 409),  # taken in radiology
    ):
        answer = await page.request.post(
            f"{console.url}{path}", form={"csrf_token": token, **form}, max_redirects=0
        )
        assert answer.status == status, (path, form)
    assert [(e, s) for e, s in await refusals(console) if e.startswith("/console")] == [
        (USER_ENDPOINT, 403),
        (USER_ENDPOINT, 400),
        (USER_ENDPOINT, 403),
        (USER_ENDPOINT, 400),
        ("/console/admin/users", 409),
    ]
    created = {"action": "create_service_user", "tenant_id": bot.tenant_id, "name": "pacs-exporter"}
    updated = {"action": "update_user", "tenant_id": bot.tenant_id}
    assert [(target, change) for _, target, change in await admin_changes(console)] == [
        (f"user:{exporter.id}", created),
        (f"user:{bot.id}", {**updated, "granted_roles": {"old": [], "new": ["auditor"]}}),
        (f"user:{bot.id}", {**updated, "is_disabled": DISABLED}),
        (f"user:{bot.id}", {**updated, "is_disabled": ENABLED}),
    ]


async def cardiology_rows(console: Console) -> list[tuple[Any, ...]]:
    """Everything an admin could change of cardiology: its tenant row and its users."""
    async with console.stack.sessions() as session:
        tenants = await session.scalars(select(Tenant).where(Tenant.name == "cardiology"))
        rows: list[tuple[Any, ...]] = [
            (t.id, t.name, t.is_disabled, t.allowed_models) for t in tenants
        ]
        cardiology = rows[0][0]
        users = await session.scalars(
            select(User).where(User.tenant_id == cardiology).order_by(User.id)
        )
        rows += [(u.id, u.name, u.is_disabled, u.granted_roles) for u in users]
    return rows


async def test_tenant_admin_cannot_see_or_change_another_tenant(
    console: Console, page: Any
) -> None:
    cardiology = await tenant_id(console, "cardiology")
    theirs = await user_row(console, "cardiology", "cardiology-bot")
    cardiology_key = await console.stack.key(tenant="cardiology", user="cardiology-bot")
    before = await cardiology_rows(console)
    await sign_in(page, console.url, "bob", "users-boundary")
    await page.goto(f"{console.url}/console/admin/users")
    assert "cardiology" not in await page.locator("table.users").inner_text()
    await page.goto(f"{console.url}/console/admin/tenants")
    assert "cardiology" not in await page.locator("table.tenants").inner_text()

    for url in (
        f"/console/admin/users/{theirs.id}",
        f"/console/admin/tenants/{cardiology}/models",
        f"/console/admin/users?tenant={cardiology}",
    ):
        response = await page.goto(f"{console.url}{url}")
        assert response is not None
        assert response.status == 404, url  # as absent as what never existed
        assert "cardiology-bot" not in await page.content()
    await screenshot(page, "tenant-admin-other-tenant")

    token = await csrf_token(page, console.url)
    for path, form, status in (
        (f"/console/admin/users/{theirs.id}/state", {"is_disabled": "true"}, 404),
        (f"/console/admin/users/{theirs.id}/roles", {"granted_roles": "tenant_admin"}, 404),
        (f"/console/admin/tenants/{cardiology}/models", {"access": "listed"}, 404),
        (f"/console/admin/tenants/{cardiology}/state", {"is_disabled": "true"}, 404),
        ("/console/admin/users", {"name": "smuggled", "tenant_id": cardiology}, 404),
        ("/console/admin/tenants", {"name": "smuggled"}, 403),
    ):
        answer = await page.request.post(
            f"{console.url}{path}", form={"csrf_token": token, **form}, max_redirects=0
        )
        assert answer.status == status, path
    assert await cardiology_rows(console) == before
    assert (await chat(console, cardiology_key)).status_code == 200
    assert await admin_changes(console) == []
    assert await refusals(console) == [
        (USER_ENDPOINT, 404),
        (MODELS_ENDPOINT, 404),
        ("/console/admin/users", 404),
        (USER_ENDPOINT, 404),
        (USER_ENDPOINT, 404),
        (MODELS_ENDPOINT, 404),
        (TENANT_ENDPOINT, 404),
        ("/console/admin/users", 404),
        ("/console/admin/tenants", 403),
    ]


async def test_an_auditor_reaches_no_admin_page(console: Console, page: Any) -> None:
    radiology = await tenant_id(console, "radiology")
    await sign_in(page, console.url, "carol", "auditor-admin")
    navigation = page.get_by_role("navigation")
    for link in ("Tenants", "Users"):
        assert await navigation.get_by_role("link", name=link).count() == 0
    for url in (
        "/console/admin/tenants",
        "/console/admin/users",
        f"/console/admin/tenants/{radiology}/models",
    ):
        response = await page.goto(f"{console.url}{url}")
        assert response is not None
        assert response.status == 403, url
        assert await page.locator("h1").inner_text() == "Not allowed (403)"
    await screenshot(page, "auditor-tenants-refused")
    token = await csrf_token(page, console.url)
    refused = await page.request.post(
        f"{console.url}/console/admin/tenants/{radiology}/models",
        form={"csrf_token": token, "access": "listed"},
        max_redirects=0,
    )
    assert refused.status == 403
    assert await admin_changes(console) == []


async def test_admin_changes_need_the_sessions_csrf_token(console: Console, page: Any) -> None:
    bot = await user_row(console, "radiology", "radiology-bot")
    radiology = await tenant_id(console, "radiology")
    await sign_in(page, console.url, "dora", "admin-csrf")
    for path, form in (
        ("/console/admin/tenants", {"name": "forged"}),
        (f"/console/admin/tenants/{radiology}/state", {"is_disabled": "true"}),
        (f"/console/admin/tenants/{radiology}/models", {"access": "listed"}),
        ("/console/admin/users", {"name": "forged", "tenant_id": radiology}),
        (f"/console/admin/users/{bot.id}/roles", {"granted_roles": "auditor"}),
        (f"/console/admin/users/{bot.id}/state", {"is_disabled": "true"}),
    ):
        for token in ({}, {"csrf_token": "another-sessions-token"}):
            refused = await page.request.post(
                f"{console.url}{path}", form={**form, **token}, max_redirects=0
            )
            assert refused.status == 403, (path, token)
    assert await admin_changes(console) == []
    async with console.stack.sessions() as session:
        tenant = await session.get(Tenant, radiology)
        user = await session.get(User, bot.id)
        forged = await session.scalar(select(Tenant).where(Tenant.name == "forged"))
    assert tenant is not None
    assert user is not None
    assert (tenant.is_disabled, tenant.allowed_models, forged) == (False, None, None)
    assert (user.is_disabled, user.granted_roles) == (False, [])
    await page.goto(f"{console.url}/console/admin/users?tenant={radiology}")
    await screenshot(page, "platform-admin-users")
    assert await column(page, "users", 1) == ["radiology-bot"]
