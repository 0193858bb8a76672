"""Worker crashes, for real: SIGKILL a vLLM worker holding a job, before and after it streamed.

These workers serve the demo model under another name, so the shared worker never takes
their jobs. Leases are 3 s here.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator

import openai
import pytest
import redis

from gateway.queue.protocol import WORKER_GROUP, queues_key
from tests.e2e.conftest import Cluster
from tests.processes import DEMO_MODEL, EnclaveProcess, wait_for, worker_id_of

pytestmark = pytest.mark.e2e

FAULT_MODEL = "smollm2-faults"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def pending_owner(cluster: Cluster) -> str | None:
    """The consumer (worker id) holding the one pending job of the fault model, if any."""
    client = redis.Redis.from_url(cluster.redis_url)
    try:
        for stream in client.smembers(queues_key(FAULT_MODEL)):
            entries = client.xpending_range(stream, WORKER_GROUP, "-", "+", 10)
            if entries:
                return str(entries[0]["consumer"].decode())
        return None
    finally:
        client.close()


def last_queued(client: redis.Redis, model: str) -> dict[bytes, bytes]:
    """The id of the last job queued in each of ``model``'s streams."""
    return {
        stream: client.xinfo_stream(stream)["last-generated-id"]
        for stream in client.smembers(queues_key(model))
    }


@pytest.fixture(scope="module")
def fault_workers(cluster: Cluster) -> Iterator[list[EnclaveProcess]]:
    started: list[EnclaveProcess] = []
    yield started
    for worker in started:
        worker.stop()


def test_job_held_by_a_killed_worker_that_had_not_streamed_is_completed_by_another(
    cluster: Cluster, fault_workers: list[EnclaveProcess]
) -> None:
    holder = cluster.processes.worker(
        cluster.model_path,
        FAULT_MODEL,
        cluster.redis_url,
        env={"ENCLAVE_WORKER__FAILPOINT": "hold_before_generate"},
    )
    fault_workers.append(holder)
    holder_id = worker_id_of(cluster.redis_url, holder.pid)
    result: dict[str, object] = {}

    def ask() -> None:
        try:
            result["completion"] = cluster.client(timeout=600).chat.completions.create(
                model=FAULT_MODEL,
                messages=QUESTION,
                temperature=0,
                max_tokens=30,
                # the rescuing worker starts after the default 30 s a request may wait
                extra_headers={"x-enclave-queue-timeout": "600"},
            )
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    caller = threading.Thread(target=ask)
    caller.start()
    wait_for(
        lambda: pending_owner(cluster) == holder_id or not caller.is_alive(),
        timeout_s=30,
        what="the claim",
    )
    assert caller.is_alive(), result
    holder.kill()
    rescuer = cluster.processes.worker(cluster.model_path, FAULT_MODEL, cluster.redis_url)
    fault_workers.append(rescuer)
    caller.join(timeout=300)
    assert "error" not in result, result.get("error")
    completion = result["completion"]
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert "Paris" in (completion.choices[0].message.content or "")
    (outcome,) = [r for r in cluster.audit_rows(completion.id) if r.event == "outcome"]
    assert outcome.status == 200
    assert outcome.worker_id == worker_id_of(cluster.redis_url, rescuer.pid)


def test_worker_killed_mid_stream_gives_the_client_an_error_and_no_duplicate(
    cluster: Cluster, fault_workers: list[EnclaveProcess]
) -> None:
    if len([w for w in fault_workers if w.is_alive()]) < 1:
        pytest.fail("needs the rescuer worker of the previous test")
    second = cluster.processes.worker(cluster.model_path, FAULT_MODEL, cluster.redis_url)
    fault_workers.append(second)
    alive = {worker_id_of(cluster.redis_url, w.pid): w for w in fault_workers if w.is_alive()}
    stream = cluster.client().chat.completions.create(
        model=FAULT_MODEL,
        messages=QUESTION,
        max_tokens=1500,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = iter(stream)
    received = [next(chunks) for _ in range(6)]
    request_id = received[0].id
    owner = pending_owner(cluster)
    assert owner in alive
    alive[owner].kill()
    with pytest.raises(openai.APIError) as caught:
        received.extend(chunks)
    assert "stopped after the response had started" in str(caught.value)
    assert all(c.id == request_id for c in received)
    contents = [c.choices[0].delta.content for c in received[1:] if c.choices]
    assert all(contents)  # every chunk after the role chunk carries new text, none repeated
    assert len(contents) < 1500
    outcomes = [r for r in cluster.audit_rows(request_id) if r.event == "outcome"]
    assert [(r.status, r.error_code) for r in outcomes] == [(502, "worker_lost")]


def test_unreachable_audit_store_gives_503_and_the_model_is_never_called(
    cluster: Cluster,
) -> None:
    dead_audit = "postgresql+asyncpg://enclave@127.0.0.1:9/audit"  # port 9: nothing listens
    gateway, base_url = cluster.processes.gateway(env={"ENCLAVE_AUDIT__DATABASE_URL": dead_audit})
    client = redis.Redis.from_url(cluster.redis_url)
    try:
        before = last_queued(client, "smollm2-135m")
        api = openai.OpenAI(base_url=f"{base_url}/v1", api_key=cluster.api_key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            api.chat.completions.create(model="smollm2-135m", messages=QUESTION)
        after = last_queued(client, "smollm2-135m")
    finally:
        client.close()
        gateway.stop()
    assert caught.value.status_code == 503
    assert caught.value.code == "audit_unavailable"
    assert after == before  # no job was ever queued for a worker


def test_sigterm_drains_a_worker_running_a_stream_then_it_exits_0(
    cluster: Cluster, fault_workers: list[EnclaveProcess]
) -> None:
    alive = [w for w in fault_workers if w.is_alive()]
    if len(alive) != 1:
        pytest.fail(f"expected the one surviving fault worker, found {len(alive)}")
    (worker,) = alive
    stream = cluster.client().chat.completions.create(
        model=FAULT_MODEL,
        messages=QUESTION,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = iter(stream)
    received = [next(chunks) for _ in range(3)]
    worker.process.send_signal(signal.SIGTERM)
    received.extend(chunks)  # the running request finishes despite the SIGTERM
    usage = received[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 40
    assert worker.process.wait(timeout=120) == 0
    assert worker_id_of(cluster.redis_url, worker.pid) is None  # deregistered


def test_sigterm_lets_a_gateways_open_stream_finish_and_refuses_new_connections(
    cluster: Cluster,
) -> None:
    """What the chart's preStop pause and ENCLAVE_HTTP__DRAIN_TIMEOUT_S rely on: a gateway
    told to stop takes no new connection but finishes the streams it holds, then exits (by
    the SIGTERM itself, which uvicorn raises again once drained: a clean stop to systemd)."""
    gateway, base_url = cluster.processes.gateway(env={"ENCLAVE_HTTP__DRAIN_TIMEOUT_S": "60"})
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=cluster.api_key, max_retries=0)
    stream = client.chat.completions.create(
        model=DEMO_MODEL,
        messages=QUESTION,
        max_tokens=48,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = iter(stream)
    received = [next(chunks) for _ in range(3)]
    gateway.process.send_signal(signal.SIGTERM)
    wait_for(lambda: not accepts(base_url), timeout_s=30, what="the gateway to stop listening")
    received.extend(chunks)  # the open stream runs to its end
    usage = received[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 48
    assert gateway.process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Traceback" not in gateway.log_path.read_text(errors="replace")


def accepts(base_url: str) -> bool:
    host, port = base_url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False
