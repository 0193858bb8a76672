"""Opaque tokens from a real OpenID Provider (panva/oidc-provider), introspected by Enclave.

The endpoint comes from discovery; the gateway introspects as ``radiology-service`` (any
confidential client may introspect in ``tests/oidc/provider.mjs``). The key rotation test
resets the provider's token store, so it keeps the previous keys and runs last.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.auth.access_tokens import InvalidToken
from gateway.auth.discovery import ProviderMetadata, discover
from gateway.auth.introspection import Introspector
from tests.oidc_provider import OidcProvider
from tests.processes import free_port

pytestmark = pytest.mark.integration

OPAQUE = "urn:enclave:opaque"
GATEWAY_CLIENT = "radiology-service"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


@pytest.fixture
async def metadata(oidc_provider: OidcProvider, http: httpx.AsyncClient) -> ProviderMetadata:
    return await discover(http, oidc_provider.issuer)


@pytest.fixture
def make_introspector(
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
) -> Callable[..., Introspector]:
    """Factory: an Introspector on the discovered endpoint, as the gateway's client."""
    assert metadata.introspection_endpoint is not None
    endpoint = metadata.introspection_endpoint

    def make(**overrides: Any) -> Introspector:
        options: dict[str, Any] = {
            "client_id": GATEWAY_CLIENT,
            "client_secret": oidc_provider.client_secrets[GATEWAY_CLIENT],
            "issuer": oidc_provider.issuer,
            "audiences": frozenset({OPAQUE}),
            **overrides,
        }
        return Introspector(http, options.pop("endpoint", endpoint), **options)

    return make


async def reason_for(introspector: Introspector, token: str) -> str:
    with pytest.raises(InvalidToken) as refused:
        await introspector.introspect(token)
    return refused.value.reason


async def test_an_opaque_token_is_active_with_its_claims(
    oidc_provider: OidcProvider,
    make_introspector: Callable[..., Introspector],
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service", resource=OPAQUE)
    assert token.count(".") == 0  # opaque, not a JWT
    claims = await make_introspector().introspect(token)
    assert claims["active"] is True
    assert claims["tenant"] == "cardiology"
    assert claims["client_id"] == "cardiology-service"
    assert claims["aud"] == OPAQUE
    assert claims["iss"] == oidc_provider.issuer
    assert claims["exp"] > time.time()


async def test_a_token_for_another_audience_is_refused(
    oidc_provider: OidcProvider,
    make_introspector: Callable[..., Introspector],
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service", resource=OPAQUE)
    introspector = make_introspector(audiences=frozenset({"urn:enclave"}))
    assert await reason_for(introspector, token) == "bad_audience"


async def test_a_garbage_token_is_inactive(make_introspector: Callable[..., Introspector]) -> None:
    assert await reason_for(make_introspector(), "not-a-token-this-provider-issued") == (
        "inactive_token"
    )


async def test_a_jwt_access_token_is_refused_by_the_endpoint(
    oidc_provider: OidcProvider,
    make_introspector: Callable[..., Introspector],
) -> None:
    """oidc-provider answers 400 to a structured token: JWTs go to validate_access_token."""
    jwt = oidc_provider.client_credentials_token("cardiology-service", resource="urn:enclave")
    assert jwt.count(".") == 2
    assert await reason_for(make_introspector(), jwt) == "introspection_unavailable"


async def test_a_wrong_client_secret_fails_closed(
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
    make_introspector: Callable[..., Introspector],
) -> None:
    """The endpoint answers 401 invalid_client, which says nothing about the token: our
    misconfiguration, so ``introspection_unavailable`` rather than ``inactive_token``."""
    token = oidc_provider.client_credentials_token("cardiology-service", resource=OPAQUE)
    assert metadata.introspection_endpoint is not None
    direct = await http.post(
        metadata.introspection_endpoint,
        data={"token": token},
        auth=(GATEWAY_CLIENT, "not-the-secret"),
    )
    assert (direct.status_code, direct.json()["error"]) == (401, "invalid_client")
    introspector = make_introspector(client_secret="not-the-secret")
    assert await reason_for(introspector, token) == "introspection_unavailable"


async def test_an_endpoint_that_is_down_fails_closed(
    oidc_provider: OidcProvider,
    make_introspector: Callable[..., Introspector],
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service", resource=OPAQUE)
    nothing_listens = f"http://127.0.0.1:{free_port()}/token/introspection"
    introspector = make_introspector(endpoint=nothing_listens)
    assert await reason_for(introspector, token) == "introspection_unavailable"


# Keep last: rotation resets the provider's token store (previous keys stay published).
async def test_a_token_forgotten_by_the_provider_is_inactive_once_the_cache_expires(
    oidc_provider: OidcProvider,
    make_introspector: Callable[..., Introspector],
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service", resource=OPAQUE)
    clock = [time.time()]
    introspector = make_introspector(clock=lambda: clock[0], max_cache_s=30.0)
    assert (await introspector.introspect(token))["tenant"] == "cardiology"

    oidc_provider.rotate_keys(keep_previous=True)
    # Within max_cache_s the cached answer stands: that is the bound on staleness.
    assert (await introspector.introspect(token))["tenant"] == "cardiology"
    clock[0] += 30.0
    assert await reason_for(introspector, token) == "inactive_token"
