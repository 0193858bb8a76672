"""Discovery: the document must name the configured issuer and keep its keys at home."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gateway.auth.discovery import (
    MAX_DOCUMENT_BYTES,
    DiscoveryError,
    discover,
    jwks_fetcher,
    parse_discovery,
)

ISSUER = "https://idp.example.org/realms/hospital"


def document(**overrides: Any) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "jwks_uri": "https://idp.example.org/realms/hospital/protocol/openid-connect/certs",
        "token_endpoint": "https://idp.example.org/realms/hospital/protocol/openid-connect/token",
        **overrides,
    }


def client_serving(routes: dict[str, httpx.Response]) -> httpx.AsyncClient:
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        return routes.get(str(request.url), httpx.Response(404))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client.requested = requested  # type: ignore[attr-defined]
    return client


def test_a_matching_document_gives_its_endpoints() -> None:
    metadata = parse_discovery(document(), configured_issuer=ISSUER)
    assert metadata.jwks_uri.endswith("/certs")
    assert metadata.token_endpoint is not None
    assert metadata.introspection_endpoint is None


def test_the_authorization_endpoint_is_kept_only_on_an_allowed_host() -> None:
    """Only the console's sign-in uses it: a foreign one is dropped, never fatal to tokens."""
    auth = "https://idp.example.org/realms/hospital/protocol/openid-connect/auth"
    kept = parse_discovery(document(authorization_endpoint=auth), configured_issuer=ISSUER)
    assert kept.authorization_endpoint == auth
    for foreign in ("https://evil.example.org/auth", "http://idp.example.org/auth", 42):
        dropped = parse_discovery(
            document(authorization_endpoint=foreign), configured_issuer=ISSUER
        )
        assert dropped.authorization_endpoint is None
        assert dropped.jwks_uri.endswith("/certs")


def test_the_end_session_endpoint_is_kept_only_on_an_allowed_host() -> None:
    logout = "https://idp.example.org/realms/hospital/protocol/openid-connect/logout"
    kept = parse_discovery(document(end_session_endpoint=logout), configured_issuer=ISSUER)
    assert kept.end_session_endpoint == logout
    for foreign in ("https://evil.example.org/logout", "http://idp.example.org/logout", None):
        dropped = parse_discovery(document(end_session_endpoint=foreign), configured_issuer=ISSUER)
        assert dropped.end_session_endpoint is None


@pytest.mark.parametrize(
    "issuer",
    [ISSUER + "/", "https://evil.example.org/realms/hospital", ISSUER.upper(), None, 42],
)
def test_an_issuer_that_is_not_exactly_ours_is_refused(issuer: object) -> None:
    with pytest.raises(DiscoveryError, match="discovery issuer"):
        parse_discovery(document(issuer=issuer), configured_issuer=ISSUER)


@pytest.mark.parametrize(
    "jwks_uri",
    [
        "https://evil.example.org/certs",
        "http://idp.example.org/realms/hospital/certs",
        "https://idp.example.org.evil.example/certs",
        "file:///etc/passwd",
        None,
    ],
)
def test_jwks_elsewhere_or_in_clear_text_is_refused(jwks_uri: object) -> None:
    with pytest.raises(DiscoveryError):
        parse_discovery(document(jwks_uri=jwks_uri), configured_issuer=ISSUER)


def test_allowed_hosts_can_name_a_separate_key_host() -> None:
    keys_host = "keys.example.org"
    metadata = parse_discovery(
        document(jwks_uri=f"https://{keys_host}/certs", token_endpoint=None),
        configured_issuer=ISSUER,
        allowed_hosts=frozenset({keys_host}),
    )
    assert metadata.jwks_uri == f"https://{keys_host}/certs"


def test_plain_http_is_allowed_on_loopback_only() -> None:
    local = "http://127.0.0.1:9000/oidc"
    metadata = parse_discovery(
        {"issuer": local, "jwks_uri": f"{local}/jwks"}, configured_issuer=local
    )
    assert metadata.jwks_uri == f"{local}/jwks"


async def test_discover_fetches_the_well_known_document() -> None:
    client = client_serving(
        {f"{ISSUER}/.well-known/openid-configuration": httpx.Response(200, json=document())}
    )
    async with client:
        metadata = await discover(client, ISSUER)
    assert metadata.issuer == ISSUER


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(302, headers={"Location": "https://evil.example.org/"}),
        httpx.Response(500),
        httpx.Response(200, content=b"<html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, content=b"{" + b" " * (MAX_DOCUMENT_BYTES + 1) + b"}"),
    ],
    ids=["redirect", "server error", "not json", "not an object", "too large"],
)
async def test_untrustworthy_responses_are_discovery_errors(response: httpx.Response) -> None:
    url = f"{ISSUER}/.well-known/openid-configuration"
    async with client_serving({url: response}) as client:
        with pytest.raises(DiscoveryError):
            await discover(client, ISSUER)


async def test_unreachable_provider_is_a_discovery_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(DiscoveryError, match="unreachable"):
            await discover(client, ISSUER)


async def test_jwks_fetcher_returns_the_key_set() -> None:
    jwks = {"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}
    uri = document()["jwks_uri"]
    async with client_serving({uri: httpx.Response(200, content=json.dumps(jwks))}) as client:
        assert await jwks_fetcher(client, uri)() == jwks
