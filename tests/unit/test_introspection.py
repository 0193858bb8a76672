"""Introspection: only an active answer for our issuer and audience passes; failures fail closed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from gateway.auth.access_tokens import MAX_TOKEN_BYTES, InvalidToken
from gateway.auth.discovery import DiscoveryError
from gateway.auth.introspection import MAX_ANSWER_BYTES, REFUSAL_CACHE_S, Introspector

ISSUER = "https://idp.example.org/realms/hospital"
ENDPOINT = ISSUER + "/protocol/openid-connect/token/introspect"
AUDIENCE = "urn:enclave"
TOKEN = "opaque-token.abc_DEF~123+/=="
NOW = 1_700_000_000.0

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """An introspection endpoint behind ``httpx.MockTransport``; records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Handler = self.json_answer(active(exp=NOW + 600))

    @staticmethod
    def json_answer(body: object, status: int = 200) -> Handler:
        async def answer(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, json=body)

        return answer

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.answer(request)


def active(**claims: Any) -> dict[str, Any]:
    return {
        "active": True,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "client_id": "cardiology-service",
        "tenant": "cardiology",
        **claims,
    }


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http(endpoint: Endpoint) -> AsyncIterator[httpx.AsyncClient]:
    # follow_redirects=True on the client: the introspector must turn it off itself.
    transport = httpx.MockTransport(endpoint)
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        yield client


@pytest.fixture
def make_introspector(http: httpx.AsyncClient, clock: FakeClock) -> Callable[..., Introspector]:
    def make(**overrides: Any) -> Introspector:
        options: dict[str, Any] = {
            "client_id": "enclave-gateway",
            "client_secret": "gateway-secret",
            "issuer": ISSUER,
            "audiences": frozenset({AUDIENCE, "urn:enclave:opaque"}),
            "clock": clock,
            **overrides,
        }
        return Introspector(http, ENDPOINT, **options)

    return make


@pytest.fixture
def introspector(make_introspector: Callable[..., Introspector]) -> Introspector:
    return make_introspector()


async def reason_for(introspector: Introspector, token: str = TOKEN) -> str:
    with pytest.raises(InvalidToken) as refused:
        await introspector.introspect(token)
    return refused.value.reason


# --- the request ------------------------------------------------------------------------


async def test_an_active_token_gives_its_claims(
    introspector: Introspector, endpoint: Endpoint
) -> None:
    claims = await introspector.introspect(TOKEN)
    assert claims["tenant"] == "cardiology"
    assert claims["client_id"] == "cardiology-service"
    (request,) = endpoint.requests
    assert request.method == "POST"
    assert str(request.url) == ENDPOINT
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.content.decode(), strict_parsing=True)
    assert form == {"token": [TOKEN], "token_type_hint": ["access_token"]}


async def test_client_secret_basic_form_urlencodes_id_and_secret(
    make_introspector: Callable[..., Introspector], endpoint: Endpoint
) -> None:
    introspector = make_introspector(client_id="svc:one", client_secret="s3cr+t /é")
    await introspector.introspect(TOKEN)
    scheme, _, credentials = endpoint.requests[0].headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode("ascii") == "svc%3Aone:s3cr%2Bt+%2F%C3%A9"


def test_a_clear_text_endpoint_off_loopback_is_refused(http: httpx.AsyncClient) -> None:
    with pytest.raises(DiscoveryError, match="https"):
        Introspector(
            http,
            "http://idp.example.org/introspect",
            client_id="a",
            client_secret="b",
            issuer=ISSUER,
            audiences=frozenset({AUDIENCE}),
        )


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [{"active": False}, {}, active(active="true"), active(active=1), active(active=None)],
)
async def test_anything_but_active_true_is_inactive(
    introspector: Introspector, endpoint: Endpoint, answer: dict[str, Any]
) -> None:
    endpoint.answer = endpoint.json_answer(answer)
    assert await reason_for(introspector) == "inactive_token"


@pytest.mark.parametrize("iss", [ISSUER + "/", "https://evil.example.org", ISSUER.upper(), None])
async def test_another_issuer_is_refused(
    introspector: Introspector, endpoint: Endpoint, iss: object
) -> None:
    endpoint.answer = endpoint.json_answer(active(iss=iss))
    assert await reason_for(introspector) == "bad_issuer"


@pytest.mark.parametrize(
    "aud", ["urn:other", ["urn:other", "urn:x"], [], [42], None, {"urn:enclave": 1}]
)
async def test_an_audience_not_ours_is_refused(
    introspector: Introspector, endpoint: Endpoint, aud: object
) -> None:
    endpoint.answer = endpoint.json_answer(active(aud=aud))
    assert await reason_for(introspector) == "bad_audience"


@pytest.mark.parametrize("aud", [AUDIENCE, ["urn:other", "urn:enclave:opaque"]])
async def test_an_audience_among_ours_passes(
    introspector: Introspector, endpoint: Endpoint, aud: object
) -> None:
    endpoint.answer = endpoint.json_answer(active(aud=aud))
    assert (await introspector.introspect(TOKEN))["aud"] == aud


async def test_absent_iss_aud_and_exp_are_not_required(
    introspector: Introspector, endpoint: Endpoint
) -> None:
    endpoint.answer = endpoint.json_answer({"active": True, "sub": "alice"})
    assert await introspector.introspect(TOKEN) == {"active": True, "sub": "alice"}


@pytest.mark.parametrize("exp", [NOW, NOW - 1])
async def test_an_expired_token_is_refused(
    introspector: Introspector, endpoint: Endpoint, exp: float
) -> None:
    endpoint.answer = endpoint.json_answer(active(exp=exp))
    assert await reason_for(introspector) == "expired"


@pytest.mark.parametrize("exp", [str(NOW + 60), True, None, [NOW + 60]])
async def test_an_exp_that_is_not_a_number_is_malformed(
    introspector: Introspector, endpoint: Endpoint, exp: object
) -> None:
    endpoint.answer = endpoint.json_answer(active(exp=exp))
    assert await reason_for(introspector) == "malformed"


@pytest.mark.parametrize("token_type", ["refresh_token", "Refresh_Token"])
async def test_a_refresh_token_is_not_an_access_token(
    introspector: Introspector, endpoint: Endpoint, token_type: str
) -> None:
    endpoint.answer = endpoint.json_answer(active(token_type=token_type))
    assert await reason_for(introspector) == "not_an_access_token"


async def test_a_bearer_token_type_passes(introspector: Introspector, endpoint: Endpoint) -> None:
    endpoint.answer = endpoint.json_answer(active(token_type="Bearer"))
    assert (await introspector.introspect(TOKEN))["token_type"] == "Bearer"


async def test_an_oversized_token_is_refused_before_any_request(
    introspector: Introspector, endpoint: Endpoint
) -> None:
    assert await reason_for(introspector, "a" * (MAX_TOKEN_BYTES + 1)) == "token_too_large"
    assert endpoint.requests == []
    await introspector.introspect("a" * MAX_TOKEN_BYTES)
    assert len(endpoint.requests) == 1


@pytest.mark.parametrize("token", ["", "two words", "tök", "a\nb", "=abc"])
async def test_a_token_that_is_no_bearer_token_is_refused_before_any_request(
    introspector: Introspector, endpoint: Endpoint, token: str
) -> None:
    assert await reason_for(introspector, token) == "malformed"
    assert endpoint.requests == []


# --- fail closed ------------------------------------------------------------------------


def raw(status: int, body: bytes, headers: dict[str, str] | None = None) -> Handler:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers=headers)

    return answer


def failing(exc: Exception) -> Handler:
    async def answer(request: httpx.Request) -> httpx.Response:
        raise exc

    return answer


PADDED = json.dumps(active(padding="x" * MAX_ANSWER_BYTES)).encode()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(raw(500, json.dumps(active()).encode()), id="500"),
        pytest.param(raw(401, b'{"error": "invalid_client"}'), id="401"),
        pytest.param(raw(200, b"<html>active</html>"), id="not-json"),
        pytest.param(raw(200, b'[{"active": true}]'), id="not-an-object"),
        pytest.param(raw(200, b'{"active": false, "active": true}'), id="duplicate-member"),
        pytest.param(raw(200, PADDED), id="oversized"),
        pytest.param(raw(200, b"[" * 60_000), id="nested-too-deep"),
        pytest.param(failing(httpx.ConnectError("refused")), id="connect-error"),
        pytest.param(failing(httpx.ReadTimeout("slow")), id="read-timeout"),
    ],
)
async def test_an_unusable_answer_fails_closed(
    introspector: Introspector, endpoint: Endpoint, answer: Handler
) -> None:
    endpoint.answer = answer
    assert await reason_for(introspector) == "introspection_unavailable"
    assert len(endpoint.requests) == 1


async def test_an_answer_past_the_deadline_fails_closed(
    make_introspector: Callable[..., Introspector], endpoint: Endpoint
) -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    endpoint.answer = never
    assert await reason_for(make_introspector(timeout_s=0.05)) == "introspection_unavailable"


async def test_a_redirect_is_not_followed(introspector: Introspector, endpoint: Endpoint) -> None:
    async def redirect_then_active(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/elsewhere"):
            return httpx.Response(200, json=active())
        return httpx.Response(307, headers={"Location": ENDPOINT + "/elsewhere"})

    endpoint.answer = redirect_then_active
    assert await reason_for(introspector) == "introspection_unavailable"
    assert [str(r.url) for r in endpoint.requests] == [ENDPOINT]


async def test_a_failure_is_not_cached(introspector: Introspector, endpoint: Endpoint) -> None:
    endpoint.answer = raw(503, b"")
    assert await reason_for(introspector) == "introspection_unavailable"
    endpoint.answer = endpoint.json_answer(active())
    assert (await introspector.introspect(TOKEN))["tenant"] == "cardiology"
    assert len(endpoint.requests) == 2


# --- cache ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "cached_for_s"),
    [
        pytest.param({"exp": NOW + 30}, 30, id="until-exp"),
        pytest.param({"exp": NOW + 3600}, 60, id="at-most-max-cache-s"),
        pytest.param({}, 60, id="no-exp"),
    ],
)
async def test_an_active_answer_is_cached_until_exp_or_max_cache_s(
    introspector: Introspector,
    endpoint: Endpoint,
    clock: FakeClock,
    claims: dict[str, Any],
    cached_for_s: float,
) -> None:
    endpoint.answer = endpoint.json_answer(active(**claims))
    await introspector.introspect(TOKEN)
    clock.now = NOW + cached_for_s - 0.001
    await introspector.introspect(TOKEN)
    assert len(endpoint.requests) == 1
    clock.now = NOW + cached_for_s
    endpoint.answer = endpoint.json_answer(active(exp=NOW + 3600, tenant="radiology"))
    assert (await introspector.introspect(TOKEN))["tenant"] == "radiology"
    assert len(endpoint.requests) == 2


@pytest.mark.parametrize(("max_cache_s", "cached_for_s"), [(60.0, REFUSAL_CACHE_S), (4.0, 4.0)])
async def test_an_inactive_answer_is_cached_briefly(
    make_introspector: Callable[..., Introspector],
    endpoint: Endpoint,
    clock: FakeClock,
    max_cache_s: float,
    cached_for_s: float,
) -> None:
    introspector = make_introspector(max_cache_s=max_cache_s)
    endpoint.answer = endpoint.json_answer({"active": False})
    assert await reason_for(introspector) == "inactive_token"
    clock.now = NOW + cached_for_s - 0.001
    assert await reason_for(introspector) == "inactive_token"
    assert len(endpoint.requests) == 1
    clock.now = NOW + cached_for_s
    assert await reason_for(introspector) == "inactive_token"
    assert len(endpoint.requests) == 2


async def test_the_cache_is_keyed_by_the_token_hash(introspector: Introspector) -> None:
    await introspector.introspect(TOKEN)
    keys = list(introspector._cache)
    assert keys == [hashlib.sha256(TOKEN.encode()).digest()]
    assert all(TOKEN.encode() not in key for key in keys)


async def test_cached_claims_cannot_be_edited_by_a_caller(
    introspector: Introspector, endpoint: Endpoint
) -> None:
    endpoint.answer = endpoint.json_answer(active(groups=["enclave-users"]))
    (await introspector.introspect(TOKEN))["groups"].append("enclave-admins")
    assert (await introspector.introspect(TOKEN))["groups"] == ["enclave-users"]
    assert len(endpoint.requests) == 1


async def test_the_cache_drops_the_oldest_entry_when_full(
    make_introspector: Callable[..., Introspector], endpoint: Endpoint
) -> None:
    introspector = make_introspector(max_entries=3)
    for token in ("t1", "t2", "t3", "t4"):
        await introspector.introspect(token)
    assert len(introspector._cache) == 3
    await introspector.introspect("t2")  # still cached
    assert len(endpoint.requests) == 4
    await introspector.introspect("t1")  # dropped
    assert len(endpoint.requests) == 5


async def test_the_cache_drops_expired_entries_before_live_ones(
    make_introspector: Callable[..., Introspector], endpoint: Endpoint, clock: FakeClock
) -> None:
    introspector = make_introspector(max_entries=2)
    await introspector.introspect("live")  # oldest, cached 60 s
    endpoint.answer = endpoint.json_answer({"active": False})
    assert await reason_for(introspector, "refused") == "inactive_token"  # cached 10 s
    clock.now = NOW + REFUSAL_CACHE_S + 1
    assert await reason_for(introspector, "new") == "inactive_token"
    endpoint.answer = endpoint.json_answer({"active": False, "note": "not asked"})
    await introspector.introspect("live")  # survived: no request
    assert len(endpoint.requests) == 3


# --- single flight ----------------------------------------------------------------------


class Gate:
    """Holds the endpoint's answer until released; tells when the request has arrived."""

    def __init__(self, then: Handler) -> None:
        self.arrived = asyncio.Event()
        self.released = asyncio.Event()
        self.then = then

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrived.set()
        await self.released.wait()
        return await self.then(request)


async def test_concurrent_introspections_share_one_request(
    introspector: Introspector, endpoint: Endpoint
) -> None:
    gate = Gate(endpoint.answer)
    endpoint.answer = gate
    callers = [asyncio.create_task(introspector.introspect(TOKEN)) for _ in range(20)]
    await gate.arrived.wait()
    gate.released.set()
    results = await asyncio.gather(*callers)
    assert len(endpoint.requests) == 1
    assert all(claims == results[0] for claims in results)
    assert results[0]["tenant"] == "cardiology"


async def test_a_shared_failure_reaches_every_waiter_and_the_next_call_retries(
    introspector: Introspector, endpoint: Endpoint
) -> None:
    gate = Gate(raw(502, b"bad gateway"))
    endpoint.answer = gate
    callers = [asyncio.create_task(introspector.introspect(TOKEN)) for _ in range(5)]
    await gate.arrived.wait()
    gate.released.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert [getattr(o, "reason", o) for o in outcomes] == ["introspection_unavailable"] * 5
    assert len(endpoint.requests) == 1
    endpoint.answer = endpoint.json_answer(active())
    assert (await introspector.introspect(TOKEN))["tenant"] == "cardiology"
    assert len(endpoint.requests) == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_request(
    introspector: Introspector, endpoint: Endpoint
) -> None:
    gate = Gate(endpoint.answer)
    endpoint.answer = gate
    first = asyncio.create_task(introspector.introspect(TOKEN))
    second = asyncio.create_task(introspector.introspect(TOKEN))
    await gate.arrived.wait()
    first.cancel()
    gate.released.set()
    assert (await second)["tenant"] == "cardiology"
    assert first.cancelled()
    assert len(endpoint.requests) == 1
