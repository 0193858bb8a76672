"""Tokens from a real OpenID Provider (panva/oidc-provider) pass Enclave's validation.

Discovery, the JWKS cache, access-token validation and claim mapping run unchanged against
the provider started by ``tests/oidc_provider.py``; only the HTTP client is ours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.auth.access_tokens import (
    InvalidToken,
    IssuerPolicy,
    parse_header,
    validate_access_token,
)
from gateway.auth.claims import ClaimMapping, map_claims
from gateway.auth.discovery import ProviderMetadata, discover, jwks_fetcher
from gateway.auth.jwks import JwksCache
from tests.oidc_provider import ENCLAVE_AUDIENCE, OidcProvider

pytestmark = pytest.mark.integration

MAPPING = ClaimMapping(
    tenant_claim="tenant",
    role_claims=("groups",),
    role_map={"enclave-admins": "tenant_admin", "enclave-auditors": "auditor"},
)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


@pytest.fixture
async def metadata(oidc_provider: OidcProvider, http: httpx.AsyncClient) -> ProviderMetadata:
    return await discover(http, oidc_provider.issuer)


def policy_for(provider: OidcProvider) -> IssuerPolicy:
    return IssuerPolicy(
        issuer=provider.issuer,
        audiences=frozenset({ENCLAVE_AUDIENCE, "urn:enclave:es256"}),
        algorithms=frozenset({"RS256", "ES256"}),
        require_typ="at+jwt",
    )


def cache_for(http: httpx.AsyncClient, metadata: ProviderMetadata) -> JwksCache:
    return JwksCache(jwks_fetcher(http, metadata.jwks_uri), refresh_cooldown_s=0)


async def test_discovery_of_the_real_provider(
    oidc_provider: OidcProvider,
    metadata: ProviderMetadata,
) -> None:
    assert metadata.issuer == oidc_provider.issuer
    assert metadata.token_endpoint == oidc_provider.issuer + "/token"
    assert metadata.introspection_endpoint == oidc_provider.issuer + "/token/introspection"
    assert metadata.device_authorization_endpoint == oidc_provider.issuer + "/device/auth"


@pytest.mark.parametrize(
    ("resource", "alg"), [(ENCLAVE_AUDIENCE, "RS256"), ("urn:enclave:es256", "ES256")]
)
async def test_client_credentials_token_validates_and_maps_tenant_and_roles(
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
    resource: str,
    alg: str,
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service", resource)
    assert parse_header(token)["alg"] == alg
    claims = await validate_access_token(
        token, policy_for(oidc_provider), cache_for(http, metadata)
    )
    identity = map_claims(claims, MAPPING)
    assert identity.subject == "cardiology-service"
    assert identity.tenant == "cardiology"
    assert identity.roles == {"user", "tenant_admin"}


async def test_claims_differ_per_client(
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
) -> None:
    token = oidc_provider.client_credentials_token("radiology-service")
    claims = await validate_access_token(
        token, policy_for(oidc_provider), cache_for(http, metadata)
    )
    identity = map_claims(claims, MAPPING)
    assert (identity.tenant, identity.roles) == ("radiology", frozenset({"user", "auditor"}))


async def test_token_for_another_audience_is_refused(
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service", "urn:other-service")
    with pytest.raises(InvalidToken) as refused:
        await validate_access_token(token, policy_for(oidc_provider), cache_for(http, metadata))
    assert refused.value.reason == "bad_audience"


async def test_key_rotation_new_key_accepted_removed_key_refused(
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
) -> None:
    policy = policy_for(oidc_provider)
    keys = cache_for(http, metadata)
    old_token = oidc_provider.client_credentials_token("cardiology-service")
    await validate_access_token(old_token, policy, keys)

    # Overlap: the new key signs, the old one is still published; both tokens pass.
    oidc_provider.rotate_keys(keep_previous=True)
    new_token = oidc_provider.client_credentials_token("cardiology-service")
    assert (await validate_access_token(new_token, policy, keys))["tenant"] == "cardiology"
    await validate_access_token(old_token, policy, keys)

    # The old key is removed: once the cache refreshes (on the next unknown kid), refused.
    oidc_provider.rotate_keys()
    newest_token = oidc_provider.client_credentials_token("cardiology-service")
    await validate_access_token(newest_token, policy, keys)
    for token in (old_token, new_token):
        with pytest.raises(InvalidToken) as refused:
            await validate_access_token(token, policy, keys)
        assert refused.value.reason == "unknown_kid"


async def test_opaque_token_introspection(
    oidc_provider: OidcProvider,
    metadata: ProviderMetadata,
) -> None:
    assert metadata.introspection_endpoint is not None
    token = oidc_provider.client_credentials_token("radiology-service", "urn:enclave:opaque")
    assert token.count(".") == 0  # opaque, not a JWT
    answer = oidc_provider.introspect(token, "cardiology-service")
    assert answer["active"] is True
    assert answer["client_id"] == "radiology-service"
    assert answer["aud"] == "urn:enclave:opaque"
    assert answer["tenant"] == "radiology"
    assert oidc_provider.introspect("not-a-token", "cardiology-service") == {"active": False}
