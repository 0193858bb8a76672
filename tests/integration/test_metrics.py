"""The gateway's management listener on the real app: /metrics after real traffic (requests,
latency, tokens, refusals, queue depth and age, audit backlog) with no user identity in any
label, and /readyz with the audit sequencer among its checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from redis.asyncio import Redis

from gateway.api.health import Readiness
from gateway.app_state import Databases
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack
from tests.integration.test_quotas import auth, key_id, set_limits
from tests.processes import free_port

pytestmark = pytest.mark.integration

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> AsyncIterator[Stack]:
    engine = FakeEngine(step_delay_s=0.05, capacity=1)  # one at a time: others queue
    async with open_stack(
        make_postgres_url(), redis_url, engine, management_port=free_port()
    ) as stack:
        yield stack


async def scrape(stack: Stack) -> list[Sample]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{stack.management_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def values(samples: list[Sample], name: str, **labels: str) -> list[float]:
    return [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


async def test_a_chat_shows_in_requests_latency_and_tokens_by_endpoint_model_and_tenant(
    stack: Stack,
) -> None:
    key = await stack.key(tenant="acme", user="alice")
    response = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert response.status_code == 200
    tenant = (await stack.audit_rows())[-1].tenant_id
    assert tenant

    samples = await scrape(stack)
    labels = {"endpoint": "/v1/chat/completions", "model": "fake-model", "tenant": tenant}
    assert values(samples, "enclave_requests_total", status="200", **labels) == [1.0]
    assert values(samples, "enclave_request_duration_seconds_count", **labels) == [1.0]
    assert values(samples, "enclave_time_to_first_token_seconds_count", **labels) == [1.0]
    [first_token_s] = values(samples, "enclave_time_to_first_token_seconds_sum", **labels)
    [duration_s] = values(samples, "enclave_request_duration_seconds_sum", **labels)
    assert 0 < first_token_s < duration_s
    completion_tokens = response.json()["usage"]["completion_tokens"]
    assert values(samples, "enclave_output_tokens_total", model="fake-model", tenant=tenant) == [
        float(completion_tokens)
    ]
    assert values(samples, "enclave_output_token_rate_per_second_count", model="fake-model")
    assert values(samples, "enclave_audit_pending")  # sampled from the audit database
    assert values(samples, "enclave_audit_sequencer_lag_seconds")

    every_label_value = {v for s in samples for v in s.labels.values()}
    record = (await stack.audit_rows())[-1]
    assert "alice" not in every_label_value
    assert record.user_id not in every_label_value
    assert record.key_id not in every_label_value
    assert key not in every_label_value


async def test_refusals_count_by_status_and_admission_refusals_by_reason(stack: Stack) -> None:
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    key = await stack.key(tenant="acme", user="bob")
    await set_limits(stack, root, "key", await key_id(stack, key), requests_per_minute=1)
    admitted = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    refused = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert (admitted.status_code, refused.status_code) == (200, 429)
    unknown = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-bad"))
    assert unknown.status_code == 401
    invented = {**CHAT, "model": "no-such-model-made-up-by-a-client"}
    missing = await stack.client.post("/v1/chat/completions", json=invented, headers=auth(key))
    assert missing.status_code == 404
    tenant = (await stack.audit_rows())[-1].tenant_id
    assert tenant

    samples = await scrape(stack)
    assert values(
        samples, "enclave_admission_refusals_total", reason="requests_per_minute", tenant=tenant
    ) == [1.0]
    endpoint = {"endpoint": "/v1/chat/completions", "model": ""}
    assert values(samples, "enclave_requests_total", status="429", tenant=tenant, **endpoint) == [
        1.0
    ]
    assert values(samples, "enclave_requests_total", status="401", tenant="", **endpoint) == [1.0]
    assert values(samples, "enclave_requests_total", status="404", tenant=tenant, **endpoint) == [
        1.0
    ]
    models = {s.labels["model"] for s in samples if "model" in s.labels}
    assert "no-such-model-made-up-by-a-client" not in models  # clients cannot mint series


async def test_a_waiting_request_shows_in_queue_depth_and_age_per_model_and_tenant(
    stack: Stack,
) -> None:
    stack.engine.step_delay_s = 1.0  # the first request holds the only slot for seconds
    key = await stack.key(tenant="acme", user="carol")
    requests = [
        asyncio.create_task(stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key)))
        for _ in range(2)
    ]
    deadline = time.monotonic() + 10
    depth: list[float] = []
    while not depth:  # poll the scrape until the second request is seen waiting
        assert time.monotonic() < deadline, "no queue depth reported while a request waited"
        samples = await scrape(stack)
        depth = values(samples, "enclave_queue_depth", model="fake-model")
    assert depth == [1.0]
    [age] = values(samples, "enclave_queue_oldest_age_seconds", model="fake-model")
    assert 0 <= age < 10
    [waiting] = [s for s in samples if s.name == "enclave_queue_depth"]
    stack.engine.step_delay_s = 0.0
    responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [200, 200]
    assert waiting.labels["tenant"] == (await stack.audit_rows())[-1].tenant_id
    assert not values(await scrape(stack), "enclave_queue_depth", model="fake-model")


async def test_readiness_on_the_management_port_checks_the_audit_sequencer(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        ready = await client.get(f"{stack.management_url}/readyz")
        alive = await client.get(f"{stack.management_url}/healthz")
        api_ready = await stack.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "database": "ok",
        "audit": "ok",
        "redis": "ok",
        "sequencer": "ok",
        "status": "ready",
    }
    assert alive.json() == {"status": "ok"}
    assert api_ready.json() == ready.json()


async def test_a_gateway_whose_sequencer_stopped_is_not_ready(stack: Stack) -> None:
    async def crashed() -> None:
        raise RuntimeError("sequencer crashed")

    task = asyncio.create_task(crashed())
    with pytest.raises(RuntimeError):
        await task
    databases = Databases(main=stack.db, audit=stack.audit_db, sequencer=stack.audit_db)
    checks = await Readiness(databases, stack.redis, sequencer=task)()
    assert checks["sequencer"] == "stopped"
    assert checks["database"] == "ok"
