"""/metrics and /readyz on the management listeners of the real gateway and the real vLLM
worker, after real traffic: the gateway's request, latency and token series, the worker's
scheduler gauges beside vLLM's own series."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.e2e.conftest import Cluster
from tests.processes import DEMO_MODEL, EnclaveProcess

pytestmark = pytest.mark.e2e


def process(cluster: Cluster, name: str) -> EnclaveProcess:
    return next(p for p in cluster.processes.started if p.name == name and p.is_alive())


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(handle: EnclaveProcess) -> list[Sample]:
    status, text = get(f"{handle.management_url}/metrics")
    assert status == 200
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_on_gateway_and_worker_after_a_chat(cluster: Cluster) -> None:
    gateway, worker = process(cluster, "gateway"), process(cluster, f"worker-{DEMO_MODEL}")
    before = total(scrape(worker), "vllm:generation_tokens_total")
    completion = cluster.client().chat.completions.create(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
    )
    tokens = completion.usage.completion_tokens if completion.usage else 0
    assert tokens > 0

    on_gateway = scrape(gateway)
    chat = {"endpoint": "/v1/chat/completions", "model": DEMO_MODEL}
    assert total(on_gateway, "enclave_requests_total", status="200", **chat) >= 1
    assert total(on_gateway, "enclave_time_to_first_token_seconds_count", **chat) >= 1
    assert total(on_gateway, "enclave_request_duration_seconds_count", **chat) >= 1
    assert total(on_gateway, "enclave_output_tokens_total", model=DEMO_MODEL) >= tokens
    names = {s.name for s in on_gateway}
    assert {"enclave_audit_pending", "enclave_audit_sequencer_lag_seconds"} <= names

    on_worker = scrape(worker)
    model = {"model": DEMO_MODEL}
    assert total(on_worker, "enclave_worker_capacity", **model) == 16  # max_num_seqs
    names = {s.name for s in on_worker}
    assert {
        "enclave_worker_running",
        "enclave_worker_waiting",
        "enclave_worker_kv_cache_usage_ratio",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
    } <= names
    assert total(on_worker, "vllm:generation_tokens_total") - before >= tokens


def test_readiness_of_gateway_and_worker(cluster: Cluster) -> None:
    gateway, worker = process(cluster, "gateway"), process(cluster, f"worker-{DEMO_MODEL}")
    status, body = get(f"{gateway.management_url}/readyz")
    assert (status, json.loads(body)) == (
        200,
        {"database": "ok", "audit": "ok", "redis": "ok", "sequencer": "ok", "status": "ready"},
    )
    status, body = get(f"{worker.management_url}/readyz")
    assert (status, json.loads(body)) == (
        200,
        {"engine": "ok", "registered": "ok", "redis": "ok", "status": "ready"},
    )
    assert get(f"{worker.management_url}/healthz") == (200, '{"status": "ok"}')
