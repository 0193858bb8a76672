"""The compliance console's test deployment: the real gateway app served over HTTP (real
PostgreSQL and Redis, signed checkpoints) trusting the real OpenID Provider, with one chat
request already logged in each of two tenants; shared by the console's browser tests.

People sign in on the provider's own login form (tests/oidc/clients.json): carol is a
cardiology auditor, bob a radiology tenant_admin, dora a cardiology auditor who is also
platform_admin (an organisation-wide compliance officer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.audit.checkpoints import Verifier
from gateway.audit.sequencer import sequence_batch
from gateway.settings import OidcSettings
from tests.fakes.engine import FakeEngine
from tests.integration.sso import provider_settings
from tests.integration.stack import Stack, open_stack, signed_audit
from tests.oidc_provider import ENCLAVE_AUDIENCE, OidcProvider

ORIGIN = "enclave.test/console"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Console:
    stack: Stack
    url: str
    requests: dict[str, str]
    """Tenant name -> the request id of a chat made in it."""
    key_prefixes: dict[str, str]
    """Tenant name -> the prefix of its service account's key."""
    verifier: Verifier
    """The public half of the stack's checkpoint signing key."""
    issuer: str = ""
    """The OpenID Provider's issuer URL."""


@pytest.fixture
async def console(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    redis_client: Redis,
    oidc_provider: OidcProvider,
    tmp_path: Path,
) -> AsyncIterator[Console]:
    issuer = provider_settings(oidc_provider).model_copy(
        update={
            "console_client_id": oidc_provider.console_client_id,
            "console_resource": ENCLAVE_AUDIENCE,
        }
    )
    audit, verifier = signed_audit(tmp_path, ORIGIN, checkpoint_interval_s=3600)
    async with open_stack(
        make_postgres_url(),
        redis_url,
        FakeEngine(),
        oidc=OidcSettings(issuers=[issuer]),
        audit=audit,
    ) as stack:
        requests, prefixes = {}, {}
        for tenant in ("cardiology", "radiology"):
            key = await stack.key(tenant=tenant, user=f"{tenant}-bot")
            prefixes[tenant] = key.split("_")[1]
            response = await stack.client.post(
                "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200, response.text
            requests[tenant] = response.json()["id"]
        while await sequence_batch(stack.audit_db) > 0:
            pass
        url = str(stack.client.base_url).rstrip("/")
        yield Console(stack, url, requests, prefixes, verifier, oidc_provider.issuer)


async def csrf_token(page: Any, gateway: str) -> str:
    """The session's CSRF token, read from the sign-out form as a script would."""
    await page.goto(f"{gateway}/console/")
    value = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert value
    return str(value)
