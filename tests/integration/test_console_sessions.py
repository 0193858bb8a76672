"""Console sessions and sign-ins in progress in a real Redis, and the sign-in refusals
that need no identity provider (the whole flow runs in tests/e2e/test_console.py)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.console.login import SignInFailed, finish
from gateway.console.sessions import PendingLogin, SessionStore, login_key, session_key
from gateway.settings import ConsoleSettings, IssuerSettings, OidcSettings

pytestmark = pytest.mark.integration

ISSUER = "https://idp.example.org"
SETTINGS = ConsoleSettings(session_idle_s=600, session_max_s=3600, login_timeout_s=300)
OIDC = OidcSettings(
    issuers=[
        IssuerSettings(
            issuer=ISSUER, audiences=["enclave"], tenant_claim="tenant", console_client_id="c"
        )
    ]
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_client: Redis, clock: Clock) -> SessionStore:
    return SessionStore(redis_client, SETTINGS, clock)


async def test_a_session_is_found_by_its_id_only_and_stored_under_its_digest(
    store: SessionStore, redis_client: Redis
) -> None:
    session_id, session = await store.start("user-1", ISSUER)

    assert await store.find(session_id) == session
    assert await store.find(session_id + "x") is None
    assert session.csrf_token
    assert session.csrf_token != session_id
    keys = [k.decode() for k in await redis_client.keys("*")]
    assert keys == [session_key(session_id)]
    assert session_id not in keys[0]
    assert 0 < await redis_client.ttl(keys[0]) <= SETTINGS.session_idle_s


async def test_each_sign_in_gets_a_new_session_id(store: SessionStore) -> None:
    first, _ = await store.start("user-1", ISSUER)
    second, _ = await store.start("user-1", ISSUER)
    assert first != second


async def test_use_renews_the_idle_time(store: SessionStore, redis_client: Redis) -> None:
    session_id, _ = await store.start("user-1", ISSUER)
    await redis_client.expire(session_key(session_id), 5)
    assert await store.find(session_id) is not None
    assert await redis_client.ttl(session_key(session_id)) > 5


async def test_a_session_ends_at_its_maximum_age_however_busy(
    store: SessionStore, clock: Clock, redis_client: Redis
) -> None:
    session_id, _ = await store.start("user-1", ISSUER)
    clock.now += SETTINGS.session_max_s - 1
    assert await store.find(session_id) is not None
    clock.now += 1
    assert await store.find(session_id) is None
    assert await redis_client.exists(session_key(session_id)) == 0


async def test_logout_ends_the_session(store: SessionStore) -> None:
    session_id, _ = await store.start("user-1", ISSUER)
    await store.end(session_id)
    assert await store.find(session_id) is None


async def test_a_sign_in_in_progress_is_taken_once(
    store: SessionStore, redis_client: Redis
) -> None:
    pending = PendingLogin(ISSUER, "verifier", "browser", "http://127.0.0.1/console/callback")
    state = await store.begin_login(pending)
    assert 0 < await redis_client.ttl(login_key(state)) <= SETTINGS.login_timeout_s

    assert await store.take_login(state) == pending
    assert await store.take_login(state) is None


async def begun(store: SessionStore, browser: str = "browser") -> str:
    return await store.begin_login(
        PendingLogin(ISSUER, "verifier", browser, "http://127.0.0.1/console/callback")
    )


async def refusal(store: SessionStore, query: dict[str, str], browser: str | None) -> str:
    """Why ``finish`` refuses; it must refuse before it needs the identity provider."""
    authenticator: Any = None  # reaching the provider would fail the test
    with pytest.raises(SignInFailed) as refused:
        await finish(store, authenticator, OIDC, query, browser)
    return refused.value.reason


async def test_sign_in_refusals(store: SessionStore) -> None:
    assert await refusal(store, {"code": "c"}, "browser") == "unknown_state"
    assert await refusal(store, {"code": "c", "state": "made-up"}, "browser") == "unknown_state"

    state = await begun(store)
    assert await refusal(store, {"code": "c", "state": state}, "other-browser") == "unknown_state"
    assert await refusal(store, {"code": "c", "state": state}, "browser") == "unknown_state"

    state = await begun(store)
    assert await refusal(store, {"code": "c", "state": state}, None) == "unknown_state"

    state = await begun(store)
    query = {"code": "c", "state": state, "iss": "https://evil.example.org"}
    assert await refusal(store, query, "browser") == "iss_mixup"

    state = await begun(store)
    query = {"error": "access_denied", "state": state}
    assert await refusal(store, query, "browser") == "idp_refused"

    state = await begun(store)
    assert await refusal(store, {"state": state}, "browser") == "no_code"
