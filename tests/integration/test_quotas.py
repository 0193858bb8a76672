"""Limits on the request path through the real app: the admin API sets them, the gateway
admits or refuses with OpenAI's 429 and headers, refusals are audited, usage settles,
Redis away fails closed (or open when configured), and the openai SDK's retries work."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import openai
import pytest
from redis.asyncio import Redis

from gateway.auth.principal import Principal
from gateway.demo import start_embedded_redis, stop_process
from gateway.errors import QuotaUnavailable
from gateway.quotas.admission import Admission
from gateway.quotas.service import Quotas, duration
from gateway.settings import QuotaSettings
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack

pytestmark = pytest.mark.integration

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> AsyncIterator[Stack]:
    engine = FakeEngine(step_delay_s=0.05)  # 7 tokens: about 0.35 s a request
    async with open_stack(make_postgres_url(), redis_url, engine) as stack:
        yield stack


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def key_id(stack: Stack, key: str) -> str:
    response = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert response.status_code == 200
    rows = await stack.audit_rows()
    found = rows[-1].key_id
    assert found is not None
    return str(found)


async def set_limits(stack: Stack, admin: str, kind: str, scope_id: str, **limits: int) -> None:
    response = await stack.client.put(
        f"/admin/v1/limits/{kind}/{scope_id}", json=limits, headers=auth(admin)
    )
    assert response.status_code == 200, response.text


async def test_a_key_over_its_requests_per_minute_gets_openais_429(stack: Stack) -> None:
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    key = await stack.key()
    await set_limits(stack, root, "key", await key_id(stack, key), requests_per_minute=2)

    first = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    second = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    third = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))

    assert [r.status_code for r in (first, second, third)] == [200, 200, 429]
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.json()["error"]["type"] == "rate_limit_exceeded"
    assert third.json()["error"]["code"] == "requests_per_minute"
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert 55 <= int(third.headers["retry-after"]) <= 60
    refusals = [r for r in await stack.audit_rows() if r.event == "refused"]
    assert [(r.status, r.error_code) for r in refusals] == [(429, "requests_per_minute")]


async def test_a_spent_daily_budget_is_insufficient_quota(stack: Stack) -> None:
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    key = await stack.key()
    await set_limits(stack, root, "tenant", await tenant_of(stack, key), tokens_per_day=2000)

    ok = await stack.client.post(
        "/v1/chat/completions", json=CHAT | {"max_tokens": 1000}, headers=auth(key)
    )
    spent = await stack.client.post(
        "/v1/chat/completions", json=CHAT | {"max_tokens": 1990}, headers=auth(key)
    )

    assert ok.status_code == 200
    assert spent.status_code == 429
    assert spent.json()["error"]["type"] == "insufficient_quota"
    assert spent.json()["error"]["code"] == "daily_token_budget"


async def test_usage_settles_to_the_true_token_count(stack: Stack, redis_client: Redis) -> None:
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    key = await stack.key()
    await set_limits(stack, root, "key", await key_id(stack, key), tokens_per_minute=5000)

    response = await stack.client.post(
        "/v1/chat/completions", json=CHAT | {"max_tokens": 1000}, headers=auth(key)
    )
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 5000 - 1000  # reserved
    usage = response.json()["usage"]["total_tokens"]
    amounts = [k for k in await redis_client.keys("enclave:quota:key:*:amounts")]
    assert len(amounts) == 1
    assert int(await redis_client.hget(amounts[0], "_sum") or 0) == usage


async def test_a_concurrency_limit_holds_and_frees(stack: Stack) -> None:
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    key = await stack.key()
    await set_limits(stack, root, "key", await key_id(stack, key), concurrent_requests=1)

    async with stack.client.stream(
        "POST", "/v1/chat/completions", json=CHAT | {"stream": True}, headers=auth(key)
    ) as streaming:
        assert streaming.status_code == 200
        busy = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
        assert busy.status_code == 429
        assert busy.json()["error"]["code"] == "concurrent_requests"
        async for _ in streaming.aiter_bytes():
            pass
    free = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert free.status_code == 200


async def test_the_openai_sdk_retries_a_429_and_succeeds(stack: Stack) -> None:
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    key = await stack.key()
    await set_limits(stack, root, "key", await key_id(stack, key), concurrent_requests=1)
    base_url = f"{str(stack.client.base_url).rstrip('/')}/v1"
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=5, timeout=30)

    async with stack.client.stream(
        "POST", "/v1/chat/completions", json=CHAT | {"stream": True}, headers=auth(key)
    ) as streaming:
        assert streaming.status_code == 200
        retried = asyncio.create_task(
            client.chat.completions.with_raw_response.create(
                model="fake-model", messages=[{"role": "user", "content": "hi"}]
            )
        )
        async for _ in streaming.aiter_bytes():
            pass
    raw = await retried
    assert raw.http_response.status_code == 200
    assert raw.retries_taken >= 1  # it met the 429 and waited as told
    refusals = [r for r in await stack.audit_rows() if r.error_code == "concurrent_requests"]
    assert len(refusals) == raw.retries_taken
    await client.close()


async def test_limits_admin_api_keeps_to_each_admins_reach(stack: Stack) -> None:
    ann = await stack.key(tenant="acme", user="ann", roles=frozenset({"tenant_admin"}))
    other = await stack.key(tenant="globex", user="gus")
    ann_key_id = await key_id(stack, ann)
    gus_key_id = await key_id(stack, other)
    tenant_id = (await stack.audit_rows())[0].tenant_id

    own_key = await stack.client.put(
        f"/admin/v1/limits/key/{ann_key_id}", json={"requests_per_minute": 5}, headers=auth(ann)
    )
    assert own_key.json()["requests_per_minute"] == 5
    total = await stack.client.put(
        f"/admin/v1/limits/tenant/{tenant_id}", json={"tokens_per_day": 5}, headers=auth(ann)
    )
    assert total.status_code == 403
    default = await stack.client.put(
        f"/admin/v1/limits/tenant_user_default/{tenant_id}",
        json={"concurrent_requests": 3},
        headers=auth(ann),
    )
    assert default.status_code == 200
    elsewhere = await stack.client.put(
        f"/admin/v1/limits/key/{gus_key_id}", json={"requests_per_minute": 1}, headers=auth(ann)
    )
    assert elsewhere.status_code == 404
    bad = await stack.client.put(
        f"/admin/v1/limits/key/{ann_key_id}", json={"requests_per_minute": 0}, headers=auth(ann)
    )
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "requests_per_minute")
    changes = [r.change for r in await stack.audit_rows() if r.event == "admin"]
    assert [c["action"] for c in changes] == ["set_limits", "set_limits"]


async def test_redis_away_fails_closed_unless_configured_open(stack: Stack) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    await set_limits(stack, root, "tenant_user_default", await tenant_of(stack, root),
                     requests_per_minute=5)  # fmt: skip
    principal = Principal(
        user_id="someone", tenant_id=await tenant_of(stack, root), tenant_name="ops",
        user_name="someone",
    )  # fmt: skip
    closed = Quotas(Admission(dead), stack.sessions, QuotaSettings())
    with pytest.raises(QuotaUnavailable) as refused:
        await closed.admit(principal, "r1", "hi", 10)
    assert refused.value.headers["Retry-After"] == "5"
    opened = Quotas(Admission(dead), stack.sessions, QuotaSettings(fail_open=True))
    assert await opened.admit(principal, "r2", "hi", 10) is None
    await dead.aclose()


async def tenant_of(stack: Stack, key: str) -> str:
    await key_id(stack, key)
    tenant = (await stack.audit_rows())[-1].tenant_id
    assert tenant is not None
    return str(tenant)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1.5, "1.5s"), (360, "6m0s"), (59.25, "59.25s")]
)
def test_reset_durations_read_like_openais(seconds: float, text: str) -> None:
    assert duration(seconds) == text


async def test_a_redis_outage_is_a_503_and_service_resumes_without_a_restart(
    make_postgres_url: Callable[[], str], tmp_path: Path
) -> None:
    redis_process, redis_url = start_embedded_redis(tmp_path)  # its own: this test stops it
    try:
        async with open_stack(make_postgres_url(), redis_url, FakeEngine()) as stack:
            root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
            key = await stack.key()
            await set_limits(stack, root, "key", await key_id(stack, key), requests_per_minute=50)
            before = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
            assert before.status_code == 200

            stop_process(redis_process)
            down = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
            assert down.status_code == 503  # fail closed: no per-replica fallback
            assert down.json()["error"]["code"] in {"queue_unavailable", "quota_unavailable"}
            assert int(down.headers["retry-after"]) >= 1

            redis_process, _ = start_embedded_redis(tmp_path)  # empty, at the same address
            back_at = time.monotonic()
            while True:
                again = await stack.client.post(
                    "/v1/chat/completions", json=CHAT, headers=auth(key)
                )
                if again.status_code == 200:
                    break
                assert again.status_code in {404, 503}  # until the worker has re-registered
                assert time.monotonic() - back_at < 10, again.text
                await asyncio.sleep(0.1)
            print(f"served again {time.monotonic() - back_at:.2f} s after Redis came back")
            assert again.headers["x-ratelimit-limit-requests"] == "50"  # limits hold again
    finally:
        stop_process(redis_process)
