"""SSO through the gateway with a real OpenID Provider: tokens, users, tenants, personal keys.

Every call goes over HTTP to the real app (real PostgreSQL, Redis, consumer); tokens come
from panva oidc-provider's token endpoint; nothing about the tokens is faked.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from gateway.db.models import Tenant, User
from gateway.login import DeviceAuthorization, LoginProvider, obtain_access_token
from tests.audit_records import Logged
from tests.fakes.engine import FakeEngine
from tests.integration.sso import bearer, chat, provider_settings, sso_stack
from tests.integration.stack import Stack
from tests.oidc_provider import OidcProvider

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    engine: FakeEngine,
    oidc_provider: OidcProvider,
) -> AsyncIterator[Stack]:
    async with sso_stack(
        make_postgres_url,
        redis_url,
        engine,
        provider_settings(oidc_provider),
        jwks_refresh_cooldown_s=0,  # rotation below: new kids are fetched at once
    ) as opened:
        yield opened


async def user_of(stack: Stack, issuer: str, subject: str) -> tuple[User, Tenant]:
    async with stack.sessions() as session:
        row = (
            await session.execute(
                select(User, Tenant)
                .join(Tenant, Tenant.id == User.tenant_id)
                .where(User.issuer == issuer, User.subject == subject)
            )
        ).one()
        return row[0], row[1]


async def set_disabled(stack: Stack, user_id: str, is_disabled: bool) -> None:
    async with stack.sessions() as session:
        await session.execute(
            update(User).where(User.id == user_id).values(is_disabled=is_disabled)
        )
        await session.commit()


async def last_refusal(stack: Stack) -> Logged:
    rows = [r for r in await stack.audit_rows() if r.event == "refused"]
    return rows[-1]


async def test_provider_token_calls_chat_and_is_audited_as_that_user_in_the_mapped_tenant(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service")

    response = await chat(stack, token)

    assert response.status_code == 200, response.text
    user, tenant = await user_of(stack, oidc_provider.issuer, "cardiology-service")
    assert tenant.name == "cardiology"
    assert user.roles == {"user", "tenant_admin"}  # group enclave-admins, mapped
    request_id = response.json()["id"]
    rows = [r for r in await stack.audit_rows() if r.request_id == request_id]
    assert [(r.event, r.user_id, r.tenant_id) for r in rows] == [
        ("accepted", user.id, tenant.id),
        ("outcome", user.id, tenant.id),
    ]
    assert len(stack.engine.requests) == 1


async def test_second_token_of_the_same_subject_reuses_the_provisioned_user(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    for _ in range(2):
        token = oidc_provider.client_credentials_token("radiology-service")
        assert (await chat(stack, token)).status_code == 200
    async with stack.sessions() as session:
        users = list(await session.scalars(select(User).where(User.subject == "radiology-service")))
    assert len(users) == 1
    assert users[0].roles == {"user", "auditor"}  # enclave-users is not mapped to anything


async def test_es256_token_is_accepted(stack: Stack, oidc_provider: OidcProvider) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service", "urn:enclave:es256")
    assert (await chat(stack, token)).status_code == 200


async def test_opaque_token_is_introspected_and_accepted(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service", "urn:enclave:opaque")
    assert token.count(".") != 2  # really opaque

    response = await chat(stack, token)

    assert response.status_code == 200, response.text
    _, tenant = await user_of(stack, oidc_provider.issuer, "cardiology-service")
    assert tenant.name == "cardiology"


async def test_token_without_a_tenant_claim_is_refused_with_403(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.client_credentials_token("no-tenant-service")

    response = await chat(stack, token)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "no_tenant"
    assert (await last_refusal(stack)).error_code == "no_tenant"
    assert stack.engine.requests == []


async def test_disabling_the_user_stops_token_and_personal_key_within_one_request(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service")
    created = await stack.client.post(
        "/v1/auth/personal-keys", json={"name": "laptop"}, headers=bearer(token)
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert (await chat(stack, key)).status_code == 200
    user, _ = await user_of(stack, oidc_provider.issuer, "cardiology-service")

    await set_disabled(stack, user.id, True)

    for credential in (token, key):
        response = await chat(stack, credential)
        assert response.status_code == 401
        assert (await last_refusal(stack)).error_code == "user_disabled"
    await set_disabled(stack, user.id, False)
    assert (await chat(stack, key)).status_code == 200


async def test_personal_key_acts_with_the_users_current_roles_and_expires_in_90_days(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service")
    created = (
        await stack.client.post("/v1/auth/personal-keys", json={}, headers=bearer(token))
    ).json()
    expires = created["expires_at"]
    created_at = created["created_at"]
    days = (datetime.fromisoformat(expires) - datetime.fromisoformat(created_at)).days
    assert days in (89, 90)
    listed = await stack.client.get("/v1/auth/personal-keys", headers=bearer(created["key"]))
    assert [k["id"] for k in listed.json()["data"]] == [created["id"]]
    assert "key" not in listed.json()["data"][0]
    # The key carries no roles of its own: the user's roles come from the last token.
    user, _ = await user_of(stack, oidc_provider.issuer, "cardiology-service")
    assert user.idp_roles == ["tenant_admin"]


async def test_an_api_key_cannot_mint_personal_keys(stack: Stack) -> None:
    key = await stack.key(tenant="cardiology", user="script")

    response = await stack.client.post("/v1/auth/personal-keys", json={}, headers=bearer(key))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "oidc_token_required"


async def test_personal_key_request_is_validated(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service")
    for body, param in (({"expires_in_days": 0}, "expires_in_days"), ({"nme": "x"}, None)):
        response = await stack.client.post(
            "/v1/auth/personal-keys", json=body, headers=bearer(token)
        )
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param


async def test_revoking_a_personal_key_from_another_user_is_404(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    cardiology = oidc_provider.client_credentials_token("cardiology-service")
    radiology = oidc_provider.client_credentials_token("radiology-service")
    created = await stack.client.post("/v1/auth/personal-keys", json={}, headers=bearer(cardiology))
    key_id = created.json()["id"]

    response = await stack.client.delete(
        f"/v1/auth/personal-keys/{key_id}", headers=bearer(radiology)
    )

    assert response.status_code == 404
    assert (await chat(stack, created.json()["key"])).status_code == 200
    own = await stack.client.delete(f"/v1/auth/personal-keys/{key_id}", headers=bearer(cardiology))
    assert own.json()["revoked_at"] is not None
    assert (await chat(stack, created.json()["key"])).status_code == 401


async def test_login_configuration_names_the_device_client(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    response = await stack.client.get("/v1/auth/login")
    assert response.json() == {
        "providers": [
            {
                "issuer": oidc_provider.issuer,
                "client_id": oidc_provider.device_client_id,
                "scope": "openid",
                "resource": "urn:enclave",
            }
        ]
    }


async def test_key_rotation_at_the_provider_without_restart(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    old_token = oidc_provider.client_credentials_token("cardiology-service")
    assert (await chat(stack, old_token)).status_code == 200

    oidc_provider.rotate_keys(keep_previous=False)
    new_token = oidc_provider.client_credentials_token("cardiology-service")

    assert (await chat(stack, new_token)).status_code == 200
    response = await chat(stack, old_token)
    assert response.status_code == 401
    assert (await last_refusal(stack)).error_code == "unknown_kid"


async def test_enclave_login_device_flow_end_to_end(
    stack: Stack,
    oidc_provider: OidcProvider,
    tmp_path: Path,
) -> None:
    """``enclave login`` as a real process: device flow at the provider, alice approves in
    its pages, the gateway exchanges her token for a personal key, the CLI stores it."""
    environment = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "login",
        "--gateway",
        str(stack.client.base_url).rstrip("/"),
        "--name",
        "alice's laptop",
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    prompt: list[str] = []
    async with asyncio.timeout(60):
        while not (line := (await process.stderr.readline()).decode()).startswith("Open "):
            assert line, "enclave login ended without a prompt: " + "".join(prompt)
            prompt.append(line)
        await asyncio.to_thread(
            oidc_provider.approve_device, line.removeprefix("Open ").strip(), "alice"
        )
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()

    exported = dict(
        line.removeprefix("export ").split("=", 1)
        for line in stdout.decode().splitlines()
        if line.startswith("export ")
    )
    key = exported["OPENAI_API_KEY"]
    assert exported["OPENAI_BASE_URL"] == str(stack.client.base_url).rstrip("/") + "/v1"
    stored = json.loads((tmp_path / "enclave" / "credentials.json").read_text())
    assert [entry["key"] for entry in stored.values()] == [key]
    assert (tmp_path / "enclave" / "credentials.json").stat().st_mode & 0o777 == 0o600

    token = await alices_access_token(oidc_provider)
    user, tenant = await user_of(stack, oidc_provider.issuer, "alice")
    assert (tenant.name, user.roles) == ("cardiology", {"user"})
    for credential in (key, token):  # her key and her own token act as the same user
        response = await chat(stack, credential)
        assert response.status_code == 200, response.text
        rows = [r for r in await stack.audit_rows() if r.request_id == response.json()["id"]]
        assert {(r.user_id, r.tenant_id) for r in rows} == {(user.id, tenant.id)}

    await set_disabled(stack, user.id, True)
    assert (await chat(stack, key)).status_code == 401
    assert (await chat(stack, token)).status_code == 401


async def alices_access_token(provider: OidcProvider) -> str:
    """An access token of alice by the device flow, approved in the provider's pages."""
    approvals: list[asyncio.Future[None]] = []

    def approve(authorization: DeviceAuthorization) -> None:
        uri = authorization.verification_uri_complete
        assert uri is not None
        approvals.append(
            asyncio.ensure_future(asyncio.to_thread(provider.approve_device, uri, "alice"))
        )

    login_provider = LoginProvider(
        provider.issuer, provider.device_client_id, "openid", "urn:enclave"
    )
    async with httpx.AsyncClient(timeout=10) as http:
        token = await obtain_access_token(
            http, login_provider, on_prompt=approve, interval_override_s=0.05
        )
    await approvals[0]
    return token


async def test_concurrent_first_requests_provision_one_user_and_one_tenant(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.client_credentials_token("radiology-service")

    responses = await asyncio.gather(*(chat(stack, token) for _ in range(8)))

    assert [r.status_code for r in responses] == [200] * 8
    async with stack.sessions() as session:
        users = list(await session.scalars(select(User).where(User.subject == "radiology-service")))
        tenants = list(await session.scalars(select(Tenant).where(Tenant.name == "radiology")))
    assert (len(users), len(tenants)) == (1, 1)
