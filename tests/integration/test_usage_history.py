"""Tokens per tenant per UTC hour, counted where a request settles: through the real app,
queue and consumer, every endpoint (OpenAI's and Ollama's, streaming or not, chat,
completions and embeddings, failures and a client that leaves) adds exactly the usage it
reported, for limited and unlimited tenants alike, and what each outcome record says; and
the quota counters read back as admission counts them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from gateway.db.models import Tenant
from gateway.quotas.admission import Admission, Limits, Scope
from gateway.quotas.usage import CurrentUsage, read_current, read_history
from tests.fakes.engine import FakeEngine
from tests.faults.load import poll
from tests.integration.stack import Stack, open_stack, run_consumer

pytestmark = pytest.mark.integration

EMBEDDER = "fake-embed"
CHAT_MODEL = "fake-model"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
CHAT = {"model": CHAT_MODEL, "messages": MESSAGES}


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> AsyncIterator[Stack]:
    """An embedding worker (the stack's engine) beside a chat worker slow enough to leave."""
    embedder = FakeEngine(model=EMBEDDER, task="embed", max_context=16)
    chat = FakeEngine(model=CHAT_MODEL, step_delay_s=0.05)
    async with (
        open_stack(make_postgres_url(), redis_url, embedder) as opened,
        run_consumer(opened.redis, chat, worker_id="chat-worker"),
    ):
        yield opened


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def tenant_id(stack: Stack, name: str) -> str:
    async with stack.sessions() as session:
        found = await session.scalar(select(Tenant.id).where(Tenant.name == name))
    assert found is not None
    return found


async def counted(stack: Stack, tenant: str) -> tuple[int, int]:
    """The tenant's tokens and requests over the last 24 hours (a test may cross an hour)."""
    hours = (await read_history(stack.redis, [tenant]))[tenant]
    return sum(h.tokens for h in hours), sum(h.requests for h in hours)


async def settled(stack: Stack, tenant: str, requests: int) -> int:
    """The tenant's tokens, once its hours count ``requests`` requests."""

    async def has_all() -> bool:
        return (await counted(stack, tenant))[1] >= requests

    await poll(has_all, timeout_s=10, what=f"{requests} requests counted")
    tokens, seen = await counted(stack, tenant)
    assert seen == requests
    return tokens


def last_usage(sse: str) -> int:
    """``usage.total_tokens`` of the stream's usage chunk (stream_options.include_usage)."""
    chunks = [json.loads(line[6:]) for line in sse.splitlines() if line.startswith("data: {")]
    return int(chunks[-1]["usage"]["total_tokens"])


def ollama_counts(answer: dict[str, Any]) -> int:
    return int(answer.get("prompt_eval_count", 0)) + int(answer.get("eval_count", 0))


async def openai_usages(stack: Stack, key: str) -> list[int]:
    """One request to each OpenAI endpoint; the total tokens each reported."""
    usages = []
    for path, body in (
        ("/v1/chat/completions", CHAT | {"max_tokens": 500}),
        ("/v1/completions", {"model": CHAT_MODEL, "prompt": "The capital of France is"}),
        ("/v1/embeddings", {"model": EMBEDDER, "input": ["one two three", "four"]}),
    ):
        response = await stack.client.post(path, json=body, headers=auth(key))
        assert response.status_code == 200, response.text
        usages.append(response.json()["usage"]["total_tokens"])
    streamed = await stack.client.post(
        "/v1/chat/completions",
        json=CHAT | {"stream": True, "stream_options": {"include_usage": True}},
        headers=auth(key),
    )
    assert streamed.status_code == 200
    usages.append(last_usage(streamed.text))
    return usages


async def ollama_usages(stack: Stack, key: str) -> list[int]:
    """One request to each Ollama endpoint; the counts each reported."""
    usages = []
    for path, body in (
        ("/api/chat", {"model": CHAT_MODEL, "messages": MESSAGES, "stream": False}),
        ("/api/embed", {"model": EMBEDDER, "input": "five six seven"}),
    ):
        response = await stack.client.post(path, json=body, headers=auth(key))
        assert response.status_code == 200, response.text
        usages.append(ollama_counts(response.json()))
    streamed = await stack.client.post(
        "/api/generate", json={"model": CHAT_MODEL, "prompt": "Capital?"}, headers=auth(key)
    )
    assert streamed.status_code == 200
    usages.append(ollama_counts(json.loads(streamed.text.splitlines()[-1])))
    return usages


async def test_every_endpoint_adds_the_usage_it_reported_to_its_tenants_hour(
    stack: Stack,
) -> None:
    key = await stack.key(tenant="acme", user="alice")
    acme = await tenant_id(stack, "acme")
    assert await counted(stack, acme) == (0, 0)

    usages = await openai_usages(stack, key) + await ollama_usages(stack, key)

    assert all(usage > 0 for usage in usages)
    assert await settled(stack, acme, len(usages)) == sum(usages)


async def test_limited_and_unlimited_tenants_count_their_own_true_usage(stack: Stack) -> None:
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    free = await stack.key(tenant="acme", user="alice")
    limited = await stack.key(tenant="globex", user="gus")
    globex = await tenant_id(stack, "globex")
    for kind in ("tenant", "tenant_user_default"):
        limits = {"tokens_per_minute": 100_000, "tokens_per_day": 1_000_000}
        response = await stack.client.put(
            f"/admin/v1/limits/{kind}/{globex}", json=limits, headers=auth(root)
        )
        assert response.status_code == 200, response.text

    answers = []
    for key in (free, limited, limited):
        response = await stack.client.post(
            "/v1/chat/completions", json=CHAT | {"max_tokens": 900}, headers=auth(key)
        )
        assert response.status_code == 200, response.text
        assert ("x-ratelimit-limit-tokens" in response.headers) == (key == limited)
        answers.append(response.json()["usage"]["total_tokens"])

    # Reserved 900 and more each, settled to the true usage in both.
    assert await settled(stack, globex, 2) == answers[1] + answers[2]
    assert await settled(stack, await tenant_id(stack, "acme"), 1) == answers[0]
    assert await counted(stack, await tenant_id(stack, "ops")) == (0, 0)


async def test_failures_and_a_client_that_leaves_count_what_the_outcome_records_say(
    stack: Stack,
) -> None:
    key = await stack.key(tenant="acme", user="alice")
    acme = await tenant_id(stack, "acme")
    too_long = {"model": EMBEDDER, "input": " ".join(["word"] * 40), "truncate": False}
    refused = await stack.client.post("/api/embed", json=too_long, headers=auth(key))
    assert refused.status_code == 400, refused.text  # the worker's context check

    async with stack.client.stream(
        "POST", "/v1/chat/completions", json=CHAT | {"stream": True}, headers=auth(key)
    ) as streaming:
        async for chunk in streaming.aiter_text():
            if '"content":"' in chunk:
                break  # the client leaves after its first words

    async def both_outcomes() -> bool:
        return len([r for r in await stack.audit_rows() if r.event == "outcome"]) == 2

    await poll(both_outcomes, timeout_s=10, what="the outcome records")
    outcomes = [r for r in await stack.audit_rows() if r.event == "outcome"]
    assert [r.status for r in outcomes] == [400, 499]
    recorded = sum(r.prompt_tokens + r.completion_tokens for r in outcomes)
    assert outcomes[1].prompt_tokens > 0  # the prompt was read before it left
    assert await settled(stack, acme, 2) == recorded


async def test_current_usage_is_what_admission_counts_in_the_minute_and_the_day(
    redis_client: Redis,
) -> None:
    admission = Admission(redis_client, lease_ttl_s=10)
    limits = Limits(
        requests_per_minute=10, tokens_per_minute=1000, concurrent_requests=3, tokens_per_day=10**4
    )
    scope = Scope("tenant:t1", limits)
    start = datetime(2026, 11, 30, 12, tzinfo=UTC)

    def at(seconds: int) -> datetime:
        return start + timedelta(seconds=seconds)

    def ms(seconds: int) -> int:
        return int(at(seconds).timestamp() * 1000)

    _, first = await admission.admit("a", [scope], 100, now=at(0))
    _, second = await admission.admit("b", [scope], 200, now=at(10))
    assert first is not None
    assert second is not None
    await admission.settle(first, 40)  # used 40 of the 100 reserved; b still runs

    now = await read_current(redis_client, scope, at(15), now_ms=ms(15))
    assert now == CurrentUsage(2, 240, 1, 240, None)  # no monthly limit: not counted
    later = await read_current(redis_client, scope, at(65), now_ms=ms(65))
    assert later == CurrentUsage(1, 200, 0, 240, None)  # a left the minute, b's lease ended
    tomorrow = await read_current(redis_client, scope, at(86400), now_ms=ms(86400))
    assert tomorrow == CurrentUsage(0, 0, 0, 0, None)
