"""A gateway trusting two identity providers: the real oidc-provider and an issuer we run.

``provider`` (panva oidc-provider) maps its clients' ``tenant`` claim to tenants and their
``groups`` to roles, and accepts opaque tokens by introspection. ``partner`` (an
``IssuerServer``) puts its users in tenant ``partner``. Both pin RS256/ES256, require
``at+jwt`` and accept the audience ``urn:enclave``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import SecretStr

from gateway.settings import IssuerSettings, OidcSettings
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack
from tests.issuer_server import IssuerServer
from tests.oidc_provider import ENCLAVE_AUDIENCE, OidcProvider

ROLE_MAP = {
    "enclave-admins": "tenant_admin",
    "enclave-auditors": "auditor",
    "enclave-platform-admins": "platform_admin",
}
INTROSPECTING_CLIENT = "radiology-service"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def provider_settings(provider: OidcProvider) -> IssuerSettings:
    return IssuerSettings(
        issuer=provider.issuer,
        audiences=[ENCLAVE_AUDIENCE, "urn:enclave:es256", "urn:enclave:opaque"],
        algorithms=["RS256", "ES256"],
        require_typ="at+jwt",
        tenant_claim="tenant",
        role_claims=["groups"],
        role_map=ROLE_MAP,
        introspection_client_id=INTROSPECTING_CLIENT,
        introspection_client_secret=SecretStr(provider.client_secrets[INTROSPECTING_CLIENT]),
        login_client_id=provider.device_client_id,
        login_resource=ENCLAVE_AUDIENCE,
    )


def partner_settings(partner: IssuerServer) -> IssuerSettings:
    return IssuerSettings(
        issuer=partner.issuer,
        audiences=[ENCLAVE_AUDIENCE],
        algorithms=["RS256", "ES256"],
        require_typ="at+jwt",
        tenant_claim="tenant",
        role_claims=["groups"],
        role_map=ROLE_MAP,
    )


@contextlib.asynccontextmanager
async def sso_stack(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    engine: FakeEngine,
    *issuers: IssuerSettings,
    **oidc: Any,
) -> AsyncIterator[Stack]:
    settings = OidcSettings(issuers=list(issuers), **oidc)
    async with open_stack(make_postgres_url(), redis_url, engine, oidc=settings) as stack:
        yield stack


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def chat(stack: Stack, token: str) -> Any:
    return await stack.client.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
