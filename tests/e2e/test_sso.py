"""SSO end to end: a token from the real OpenID Provider, the openai SDK, the real gateway
process and a vLLM worker on the demo model."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from gateway.db.models import Tenant, User
from gateway.db.session import create_engine, create_session_factory
from tests.e2e.conftest import Cluster
from tests.oidc_provider import OidcProvider

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def provisioned(cluster: Cluster, issuer: str, subject: str) -> tuple[str, str]:
    """(user id, tenant name) of the user the gateway provisioned for ``subject``."""

    async def read() -> tuple[str, str]:
        engine = create_engine(cluster.database_url)
        try:
            async with create_session_factory(engine)() as session:
                row = (
                    await session.execute(
                        select(User.id, Tenant.name)
                        .join(Tenant, Tenant.id == User.tenant_id)
                        .where(User.issuer == issuer, User.subject == subject)
                    )
                ).one()
                return row[0], row[1]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_provider_token_streams_an_answer_and_is_audited_as_that_user(
    cluster: Cluster,
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.client_credentials_token("radiology-service")
    client = cluster.client(api_key=token)

    stream = client.chat.completions.create(
        model="smollm2-135m", messages=QUESTION, temperature=0, max_tokens=16, stream=True
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    user_id, tenant = provisioned(cluster, oidc_provider.issuer, "radiology-service")
    assert tenant == "radiology"
    rows = cluster.audit_rows(chunks[0].id)
    assert [(r.event, r.user_id) for r in rows] == [("accepted", user_id), ("outcome", user_id)]
