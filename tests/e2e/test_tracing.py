"""One chat request through the real gateway and the real vLLM worker, two processes that
export their spans over OTLP to a receiver in the test: a single trace spans both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.processes import DEMO_MODEL, wait_for

pytestmark = pytest.mark.e2e


def test_one_trace_spans_gateway_and_worker(cluster: Cluster, trace_receiver: OtlpReceiver) -> None:
    response = cluster.client().chat.completions.with_raw_response.create(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
    )
    request_id = response.headers["x-request-id"]

    def of_request() -> list[ReceivedSpan]:
        spans = trace_receiver.spans()
        tagged = [s for s in spans if s.attributes.get("enclave.request_id") == request_id]
        trace_ids = {s.trace_id for s in tagged}
        return [s for s in spans if s.trace_id in trace_ids]

    def names() -> set[str]:
        return {s.name for s in of_request()}

    wanted = {"POST /v1/chat/completions", "authenticate", "enqueue", "job", "engine generate"}
    wait_for(lambda: wanted <= names(), timeout_s=30, what="the request's spans from both")
    spans = of_request()
    assert len({s.trace_id for s in spans}) == 1  # one trace
    services = {s.name: s.service for s in spans}
    assert services["POST /v1/chat/completions"] == "enclave-gateway"
    assert services["enqueue"] == "enclave-gateway"
    assert services["job"] == "enclave-worker"
    assert services["engine generate"] == "enclave-worker"
    by_name = {s.name: s for s in spans}
    assert by_name["job"].parent_span_id == by_name["enqueue"].span_id  # across the queue
    assert "first token" in by_name["engine generate"].events


def test_the_gateways_json_log_line_names_the_request_and_trace_and_no_content(
    cluster: Cluster, trace_receiver: OtlpReceiver
) -> None:
    secret = "zebra-quartz-7731"  # appears in the prompt only
    response = cluster.client().chat.completions.with_raw_response.create(
        model=DEMO_MODEL,
        messages=[{"role": "user", "content": f"Repeat after me: {secret}"}],
        max_tokens=12,
    )
    request_id = response.headers["x-request-id"]
    answer = response.parse().choices[0].message.content or ""
    logs = sorted(Path(cluster.processes.env["ENCLAVE_STATE_DIR"]).glob("gateway-*.log"))

    def outcome_lines() -> list[dict[str, str]]:
        found = []
        for path in logs:
            for line in path.read_text().splitlines():
                if line.startswith("{") and request_id in line:
                    found.append(json.loads(line))
        return found

    wait_for(lambda: bool(outcome_lines()), timeout_s=10, what="the request's log line")
    [entry] = outcome_lines()
    assert entry["request_id"] == request_id
    assert len(entry["trace_id"]) == 32
    everything = "\n".join(path.read_text() for path in logs)
    assert secret not in everything
    assert cluster.api_key not in everything
    if len(answer.strip()) >= 8:  # long enough not to occur by chance
        assert answer.strip() not in everything
