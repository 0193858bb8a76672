"""The attack suite: forged, tampered and misused tokens against the running gateway.

The gateway trusts two issuers: the real oidc-provider (``provider``) and an issuer we run
(``partner``, an ``IssuerServer`` whose published keys sign tokens with any claims and
whose endpoints can fail). The attacker holds keys neither publishes. Every case must end
in 401 with the OpenAI error envelope, a "refused" audit record carrying the reason, and
no model call; the test names list the cases.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from pydantic import SecretStr

from tests.fakes.engine import FakeEngine
from tests.integration.sso import bearer, chat, partner_settings, provider_settings, sso_stack
from tests.integration.stack import Stack
from tests.issuer_server import IssuerServer, b64url, running_issuer, unsigned
from tests.oidc_provider import OidcProvider

pytestmark = pytest.mark.integration


@pytest.fixture
async def partner() -> AsyncIterator[IssuerServer]:
    async with running_issuer() as server:
        yield server


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    engine: FakeEngine,
    oidc_provider: OidcProvider,
    partner: IssuerServer,
) -> AsyncIterator[Stack]:
    async with sso_stack(
        make_postgres_url,
        redis_url,
        engine,
        provider_settings(oidc_provider),
        partner_settings(partner),
    ) as opened:
        yield opened


async def assert_refused(stack: Stack, token: str, *reasons: str) -> None:
    """401, the error envelope, one refusal record with one of ``reasons``, no model call."""
    response = await chat(stack, token)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_api_key"
    rows = await stack.audit_rows()
    assert [(r.event, r.status) for r in rows] == [("refused", 401)]
    assert rows[0].error_code in reasons, rows[0].error_code
    assert rows[0].user_id is None
    assert stack.engine.requests == []


def provider_kid(provider: OidcProvider, kty: str = "RSA") -> dict[str, Any]:
    """The provider's currently published public key of type ``kty``."""
    jwks = httpx.get(provider.issuer + "/jwks", timeout=10).json()
    return next(key for key in jwks["keys"] if key["kty"] == kty)


def provider_claims(provider: OidcProvider, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": provider.issuer,
        "sub": "cardiology-service",
        "aud": "urn:enclave",
        "exp": now + 300,
        "iat": now,
        "tenant": "cardiology",
    }
    return {**claims, **overrides}


# -- algorithm confusion -------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none(stack: Stack, oidc_provider: OidcProvider, alg: str) -> None:
    header = {"alg": alg, "typ": "at+jwt", "kid": provider_kid(oidc_provider)["kid"]}
    await assert_refused(stack, unsigned(header, provider_claims(oidc_provider)), "alg_not_allowed")


async def test_hs256_signed_with_the_issuers_rsa_public_key(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    public = provider_kid(oidc_provider)
    pem = RSAKey.import_key(public).as_pem(private=False)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": public["kid"]}
    signing_input = unsigned(header, provider_claims(oidc_provider)).rsplit(".", 1)[0]
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    await assert_refused(stack, f"{signing_input}.{b64url(signature)}", "alg_not_allowed")


@pytest.mark.parametrize("alg", ["RS512", "PS256"])
async def test_algorithm_outside_the_allow_list(
    stack: Stack, partner: IssuerServer, alg: str
) -> None:
    # The partner's RSA key pair, signing with an algorithm the policy does not pin.
    key = RSAKey.import_key(partner.rsa.as_dict(private=True) | {"alg": alg})
    header = {"alg": alg, "kid": partner.rsa.kid, "typ": "at+jwt"}
    token = jwt.encode(header, partner.claims(), key, algorithms=[alg])
    await assert_refused(stack, token, "alg_not_allowed")


async def test_es256_header_on_an_rsa_key(stack: Stack, partner: IssuerServer) -> None:
    token = partner.token(partner.ec, header={"kid": partner.rsa.kid})
    await assert_refused(stack, token, "alg_not_allowed")


# -- keys ----------------------------------------------------------------------------------


async def test_forged_signature_with_a_real_kid(
    stack: Stack,
    oidc_provider: OidcProvider,
    partner: IssuerServer,
) -> None:
    kid = provider_kid(oidc_provider)["kid"]
    token = partner.forge(header={"kid": kid}, **provider_claims(oidc_provider))
    await assert_refused(stack, token, "bad_signature")


async def test_forged_signature_for_the_partner_issuer(stack: Stack, partner: IssuerServer) -> None:
    await assert_refused(stack, partner.forge(header={"kid": partner.rsa.kid}), "bad_signature")


async def test_unknown_kid_flood_fetches_the_jwks_once(stack: Stack, partner: IssuerServer) -> None:
    assert (await chat(stack, partner.token())).status_code == 200  # keys now cached
    fetches_before = partner.requests["/jwks"]
    flood = [partner.forge(header={"kid": secrets.token_hex(8)}) for _ in range(50)]

    responses = await asyncio.gather(*(chat(stack, token) for token in flood))

    assert {r.status_code for r in responses} == {401}
    reasons = {r.error_code for r in await stack.audit_rows() if r.event == "refused"}
    assert reasons == {"unknown_kid"}
    # At most one refresh for the whole flood (the 30 s cooldown), however many kids.
    assert partner.requests["/jwks"] - fetches_before <= 1
    assert len(stack.engine.requests) == 1


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../etc/passwd",
        "' OR '1'='1",
        "kid\x00null",
        "http://127.0.0.1:1/jwks",
        "k" * 4096,
        "",
    ],
    ids=["path_traversal", "sql", "nul_byte", "url", "oversized", "empty"],
)
async def test_kid_injection(stack: Stack, partner: IssuerServer, kid: str) -> None:
    await assert_refused(
        stack, partner.forge(header={"kid": kid}), "unknown_kid", "malformed", "token_too_large"
    )


@pytest.mark.parametrize("header_name", ["jku", "x5u", "jwk"])
async def test_key_location_headers_are_never_followed(
    stack: Stack, partner: IssuerServer, header_name: str
) -> None:
    attacker_jwks = partner.issuer + "/attacker-jwks"
    value: Any = partner.attacker.as_dict(private=False) if header_name == "jwk" else attacker_jwks
    token = partner.forge(header={header_name: value, "kid": partner.attacker.kid})
    await assert_refused(stack, token, "forbidden_header")
    assert partner.requests["/attacker-jwks"] == 0


# -- claims --------------------------------------------------------------------------------


async def test_expired(stack: Stack, partner: IssuerServer) -> None:
    now = int(time.time())
    await assert_refused(stack, partner.token(exp=now - 120, iat=now - 600), "expired")


async def test_nbf_in_the_future(stack: Stack, partner: IssuerServer) -> None:
    await assert_refused(stack, partner.token(nbf=int(time.time()) + 600), "not_yet_valid")


async def test_no_exp(stack: Stack, partner: IssuerServer) -> None:
    await assert_refused(stack, partner.token(exp=None), "missing_exp")


@pytest.mark.parametrize(
    "aud",
    [["urn:other-service"], None, ["urn:other-service", "urn:another"]],
    ids=["wrong", "missing", "array_without_us"],
)
async def test_audience(stack: Stack, partner: IssuerServer, aud: list[str] | None) -> None:
    await assert_refused(stack, partner.token(aud=aud), "bad_audience")


async def test_wrong_audience_from_the_real_provider(
    stack: Stack,
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.client_credentials_token("cardiology-service", "urn:other-service")
    await assert_refused(stack, token, "bad_audience")


async def test_wrong_iss(stack: Stack, partner: IssuerServer) -> None:
    await assert_refused(stack, partner.token(iss="https://idp.attacker.example"), "unknown_issuer")


async def test_iss_of_the_provider_signed_by_the_partner(
    stack: Stack,
    oidc_provider: OidcProvider,
    partner: IssuerServer,
) -> None:
    token = partner.token(iss=oidc_provider.issuer)  # a trusted key, but not this issuer's
    await assert_refused(stack, token, "unknown_kid")


async def test_id_token_used_as_an_access_token(stack: Stack, partner: IssuerServer) -> None:
    # An ID token: typ JWT, audience the client id, nonce and auth_time.
    token = partner.token(
        header={"typ": "JWT"}, aud="enclave-cli", nonce="n-0S6_WzA2Mj", auth_time=int(time.time())
    )
    await assert_refused(stack, token, "bad_typ")


async def test_id_token_shape_even_with_at_jwt_typ_fails_on_audience(
    stack: Stack, partner: IssuerServer
) -> None:
    token = partner.token(aud="enclave-cli", nonce="n-0S6_WzA2Mj")
    await assert_refused(stack, token, "bad_audience")


# -- another tenant ------------------------------------------------------------------------


async def test_valid_token_of_another_issuer_cannot_reach_this_tenants_objects(
    stack: Stack,
    oidc_provider: OidcProvider,
    partner: IssuerServer,
) -> None:
    cardiology = oidc_provider.client_credentials_token("cardiology-service")
    created = await stack.client.post("/v1/auth/personal-keys", json={}, headers=bearer(cardiology))
    key_id = created.json()["id"]
    partner_admin = partner.token()  # tenant "partner", role tenant_admin

    user_id = created.json()["user_id"]
    tenant_id = created.json()["tenant_id"]

    revoke = await stack.client.delete(
        f"/v1/auth/personal-keys/{key_id}", headers=bearer(partner_admin)
    )
    listed = await stack.client.get("/v1/auth/personal-keys", headers=bearer(partner_admin))
    admin_calls = [
        ("GET", f"/admin/v1/users/{user_id}", None),
        ("PATCH", f"/admin/v1/users/{user_id}", {"is_disabled": True}),
        ("GET", f"/admin/v1/keys/{key_id}", None),
        ("DELETE", f"/admin/v1/keys/{key_id}", None),
        ("GET", f"/admin/v1/tenants/{tenant_id}", None),
    ]
    answers = [
        await stack.client.request(method, path, json=body, headers=bearer(partner_admin))
        for method, path, body in admin_calls
    ]

    assert revoke.status_code == 404
    assert revoke.json()["error"]["code"] == "key_not_found"
    assert listed.json()["data"] == []
    assert [a.status_code for a in answers] == [404] * len(admin_calls)
    assert (await chat(stack, created.json()["key"])).status_code == 200
    assert (await chat(stack, cardiology)).status_code == 200


# -- the provider's endpoints --------------------------------------------------------------


async def test_jwks_endpoint_unreachable_is_served_from_cache_within_the_stale_limit(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    engine: FakeEngine,
    partner: IssuerServer,
) -> None:
    async with sso_stack(
        make_postgres_url,
        redis_url,
        engine,
        partner_settings(partner),
        jwks_max_age_s=0.2,  # every request after 0.2 s tries a refresh
        jwks_max_stale_s=1.5,
        jwks_refresh_cooldown_s=0,
    ) as stack:
        cached_before = time.monotonic()  # the keys are fetched during this first call
        assert (await chat(stack, partner.token())).status_code == 200
        partner.is_jwks_down = True
        fetches = partner.requests["/jwks"]

        served_from_cache = await chat(stack, partner.token())
        # Refused once the cache is older than the stale limit (polled; 10 s is the bound).
        while (response := await chat(stack, partner.token())).status_code == 200:
            assert time.monotonic() - cached_before < 10
            await asyncio.sleep(0.1)
        refused_after = time.monotonic() - cached_before

        assert served_from_cache.status_code == 200
        assert partner.requests["/jwks"] > fetches  # it did try the endpoint meanwhile
        assert response.status_code == 401
        assert refused_after >= 1.5
        rows = [r for r in await stack.audit_rows() if r.event == "refused"]
        assert [r.error_code for r in rows] == ["jwks_unavailable"]
        partner.is_jwks_down = False  # and it recovers without restart
        assert (await chat(stack, partner.token())).status_code == 200


async def test_discovery_document_whose_issuer_does_not_match(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    engine: FakeEngine,
    partner: IssuerServer,
) -> None:
    partner.discovery_issuer = "https://idp.attacker.example"
    async with sso_stack(make_postgres_url, redis_url, engine, partner_settings(partner)) as stack:
        await assert_refused(stack, partner.token(), "discovery_failed")
        assert partner.requests["/jwks"] == 0  # keys of a mismatched document are never fetched


async def test_introspection_endpoint_down_fails_closed(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    engine: FakeEngine,
    partner: IssuerServer,
) -> None:
    settings = partner_settings(partner).model_copy(
        update={
            "introspection_client_id": "enclave",
            "introspection_client_secret": SecretStr("enclave-secret"),
        }
    )
    async with sso_stack(make_postgres_url, redis_url, engine, settings) as stack:
        await assert_refused(stack, secrets.token_urlsafe(32), "introspection_unavailable")
        assert partner.requests["/introspect"] == 1


async def test_entra_group_overage_is_a_clear_403(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    engine: FakeEngine,
    partner: IssuerServer,
) -> None:
    settings = partner_settings(partner).model_copy(
        update={"tenant_claim": None, "group_tenants": {"9f1c-cardiology": "cardiology"}}
    )
    overage = {"groups": "src1"}
    sources = {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}}
    token = partner.token(groups=None, _claim_names=overage, _claim_sources=sources)
    async with sso_stack(make_postgres_url, redis_url, engine, settings) as stack:
        response = await chat(stack, token)

        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "group_overage"
        assert "app roles" in error["message"]
        rows = await stack.audit_rows()
        assert [(r.event, r.status, r.error_code) for r in rows] == [
            ("refused", 403, "group_overage")
        ]
        assert stack.engine.requests == []


# -- malformed -----------------------------------------------------------------------------


def _truncated(partner: IssuerServer) -> str:
    return partner.token()[:-12]


MALFORMED: dict[str, Callable[[IssuerServer], str]] = {
    "two_segments": lambda p: "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0",
    "four_segments": lambda p: p.token() + ".AAAA",
    "empty_segments": lambda p: "..",
    "not_base64": lambda p: "!!!." + p.token().split(".", 1)[1],
    "header_not_json": lambda p: b64url(b"not json") + "." + p.token().split(".", 1)[1],
    "header_array": lambda p: b64url(b"[1,2]") + "." + p.token().split(".", 1)[1],
    "payload_not_json": lambda p: ".".join(
        [p.token().split(".")[0], b64url(b"{not json"), p.token().split(".")[2]]
    ),
    "duplicate_alg": lambda p: (
        b64url(b'{"alg":"RS256","alg":"none","kid":"' + str(p.rsa.kid).encode() + b'"}')
        + "."
        + p.token().split(".", 1)[1]
    ),
    "truncated_signature": _truncated,
    "oversized": lambda p: p.token(padding="x" * 9000),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_truncated_and_oversized_tokens(
    stack: Stack, partner: IssuerServer, case: str
) -> None:
    token = MALFORMED[case](partner)
    await assert_refused(
        stack,
        token,
        "malformed",
        "bad_signature",
        "token_too_large",
        "invalid_api_key",
        "alg_not_allowed",
    )


async def test_oversized_token_is_refused_before_parsing(
    stack: Stack, partner: IssuerServer
) -> None:
    await assert_refused(stack, "A" * 9000 + "." + "B" * 10 + ".C", "token_too_large")
