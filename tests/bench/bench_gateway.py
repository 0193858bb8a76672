"""Gateway capacity without a model in the way: what authentication, quotas, the audit log
(on PostgreSQL), the queue and the relay cost per request.

One real gateway process (``enclave serve``), its audit log in a fresh PostgreSQL database,
Redis, and the benchmark-only instant worker (``tests/bench/instant_worker.py``: the real
Consumer on an engine that answers "ok" at once). A small asyncio load generator (aiohttp)
drives non-streaming chat completions: closed loop at several concurrencies (each client
sends its next request when the last one ends: the most the gateway serves), then Poisson
arrivals at shares of that most (the latency at a load it keeps up with, without the queue
a saturated closed loop builds). Prints requests/s and latency percentiles (all of it is
added latency: the engine takes no time) and writes them to bench-results/gateway.json.
ENCLAVE_BENCH_CLIENTS (default 1,16,64) and ENCLAVE_BENCH_OPEN_LOOP=0 narrow a run.

    ENCLAVE_BENCH_POSTGRES=postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python -m tests.bench.bench_gateway        (``make bench``)

Target (issue 8): >= 1,000 requests/s per gateway process, p99 added latency < 20 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from gateway.demo import start_embedded_redis, stop_process
from tests.bench.local import cli
from tests.conftest import create_database, drop_database
from tests.processes import Processes, wait_for, worker_id_of

MODEL = "instant"
CONCURRENCIES = tuple(int(c) for c in os.environ.get("ENCLAVE_BENCH_CLIENTS", "1,16,64").split(","))
RATE_SHARES = (0.25, 0.5, 0.75) if os.environ.get("ENCLAVE_BENCH_OPEN_LOOP", "1") == "1" else ()
"""Open-loop rates, as shares of the most requests/s a closed loop reached."""
WARMUP_S = 3.0
MEASURE_S = float(os.environ.get("ENCLAVE_BENCH_SECONDS", "10"))
RESULTS = Path("bench-results")


@dataclass(frozen=True)
class Row:
    load: str
    """``c64``: closed loop, 64 clients; ``r250``: Poisson arrivals at 250 requests/s."""
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    gateway_cpu_ms: float
    """CPU time the gateway process spent per request (user + system)."""
    cpu_bound_rps: float
    """Requests/s one gateway process could serve with a whole core: 1000 / gateway_cpu_ms."""


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


class Load:
    """Requests against one gateway, timed once the warm-up is over."""

    def __init__(self, base_url: str, key: str, gateway: psutil.Process) -> None:
        self.url = f"{base_url}/v1/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.gateway = gateway
        self.latencies: list[float] = []
        self.errors = 0
        self.measuring = False
        self.session: aiohttp.ClientSession  # while ``run`` runs

    async def one(self) -> None:
        started = time.perf_counter()
        async with self.session.post(self.url, json=BODY) as response:
            await response.read()
            ok = response.status == 200
        if self.measuring:
            self.latencies.append(time.perf_counter() - started)
            self.errors += 0 if ok else 1

    async def run(self, load: str, senders: Coroutine[Any, Any, Any], limit: int) -> Row:
        connector = aiohttp.TCPConnector(limit=limit)
        async with aiohttp.ClientSession(headers=self.headers, connector=connector) as session:
            self.session = session
            sending = asyncio.create_task(senders)
            await asyncio.sleep(WARMUP_S)  # a warm-up period, not a synchronisation
            self.measuring, started, cpu_started = True, time.monotonic(), cpu_seconds(self.gateway)
            await sending
            elapsed = time.monotonic() - started
            cpu_ms = (cpu_seconds(self.gateway) - cpu_started) * 1000 / max(1, len(self.latencies))
        ordered = sorted(self.latencies)
        return Row(
            load=load,
            requests=len(ordered),
            errors=self.errors,
            requests_per_s=len(ordered) / elapsed,
            p50_ms=percentile(ordered, 0.50) * 1000,
            p90_ms=percentile(ordered, 0.90) * 1000,
            p99_ms=percentile(ordered, 0.99) * 1000,
            gateway_cpu_ms=cpu_ms,
            cpu_bound_rps=1000 / cpu_ms if cpu_ms else float("nan"),
        )


async def closed_loop(base_url: str, key: str, clients: int, gateway: psutil.Process) -> Row:
    """``clients`` clients, each sending its next request when the last one ends."""
    load = Load(base_url, key, gateway)
    deadline = time.monotonic() + WARMUP_S + MEASURE_S

    async def client() -> None:
        while time.monotonic() < deadline:
            await load.one()

    async def senders() -> None:
        await asyncio.gather(*(client() for _ in range(clients)))

    return await load.run(f"c{clients}", senders(), clients)


async def open_loop(base_url: str, key: str, rate: float, gateway: psutil.Process) -> Row:
    """Poisson arrivals at ``rate`` requests/s whatever the gateway's pace (a connection
    each as needed): the latency at that load, without the queue that a closed loop at
    saturation builds in front of the gateway."""
    load = Load(base_url, key, gateway)
    arrivals = random.Random(8)

    async def senders() -> None:
        t0 = time.perf_counter()
        at = arrivals.expovariate(rate)
        tasks = []
        while at < WARMUP_S + MEASURE_S:
            delay = at - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule of arrivals, not a synchronisation
            tasks.append(asyncio.create_task(load.one()))
            at += arrivals.expovariate(rate)
        await asyncio.gather(*tasks)

    return await load.run(f"r{rate:.0f}", senders(), 0)


@contextmanager
def postgres_database() -> Iterator[str]:
    base = os.environ.get(
        "ENCLAVE_BENCH_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    url = create_database(base, "bench_gateway")
    try:
        yield url
    finally:
        drop_database(base, url)


@contextmanager
def instant_worker(env: dict[str, str], redis_url: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.instant_worker", MODEL],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: worker_id_of(redis_url, process.pid) is not None,
            timeout_s=30,
            what="the instant worker",
        )
        yield
    finally:
        stop_process(process, 30)


@contextmanager
def profiled(pid: int) -> Iterator[None]:
    """With ENCLAVE_BENCH_PROFILE=1, py-spy samples the gateway for the whole run and the
    collapsed stacks go to bench-results/gateway-profile.txt (``summarize_profile`` reads
    them and prints which part of the gateway the samples fall in)."""
    if os.environ.get("ENCLAVE_BENCH_PROFILE") != "1":
        yield
        return
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "gateway-profile.txt"
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it sampled
        spy.wait(60)


COMPONENTS = (  # first match wins, from the innermost Enclave frame outwards
    ("authentication (key lookup)", ("gateway/auth/",)),
    ("quotas (limits lookup, admission)", ("gateway/quotas/",)),
    ("audit (writer, sequencer)", ("gateway/audit/",)),
    ("queue (enqueue, relay)", ("gateway/queue/",)),
    ("metrics", ("gateway/metrics.py",)),
    ("request handling (Enclave)", ("gateway/api/", "gateway/inference.py", "gateway/schemas/")),
    ("database driver (pool, rollback on return)", ("sqlalchemy/", "asyncpg/")),
    ("Redis client", ("redis/",)),
    ("HTTP server and framework", ("litestar/", "uvicorn/", "httptools")),
)


def _part_of(frames: list[str], components: Sequence[tuple[str, tuple[str, ...]]]) -> str | None:
    for frame in reversed(frames):
        for name, marks in components:
            if any(mark in frame for mark in marks):
                return name
    return None


def summarize_profile(path: Path) -> dict[str, float]:
    """Share of the gateway's busy samples by part, from py-spy's collapsed stacks: each
    stack is charged to the innermost Enclave module on it, else to the innermost library
    (SQLAlchemy runs queries in greenlets whose stacks show no Enclave frame)."""
    busy: dict[str, float] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or "Server.run" not in stack:
            continue  # idle threads and the interpreter's own
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in ("select (selectors.py", "_run_once", "Runner.run")):
            continue  # the event loop waiting: not work
        total += int(count)
        part = _part_of(frames, [c for c in COMPONENTS if c[1][0].startswith("gateway/")])
        part = part or _part_of(frames, COMPONENTS) or "other"
        busy[part] = busy.get(part, 0) + int(count)
    return {part: 100 * n / total for part, n in sorted(busy.items(), key=lambda kv: -kv[1])}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, postgres_database() as database_url:
        state = Path(tmp)
        redis_process, redis_url = start_embedded_redis(state)
        env = {
            "ENCLAVE_STATE_DIR": str(state),
            "ENCLAVE_DATABASE__URL": database_url,
            "ENCLAVE_REDIS__URL": redis_url,
            "ENCLAVE_LOG_LEVEL": "WARNING",
        }
        processes = Processes(env, state)
        try:
            cli(env, "migrate")
            key = cli(env, "keys", "create", "--tenant", "bench", "--user", "load")
            with instant_worker(env, redis_url, state / "worker.log"):
                gateway, base_url = processes.gateway()
                with profiled(gateway.pid):
                    process = psutil.Process(gateway.pid)
                    rows = [
                        asyncio.run(closed_loop(base_url, key, c, process)) for c in CONCURRENCIES
                    ]
                    most = max(row.requests_per_s for row in rows)
                    rows += [
                        asyncio.run(open_loop(base_url, key, share * most, process))
                        for share in RATE_SHARES
                    ]
        finally:
            processes.stop_all()
            redis_process.terminate()
            redis_process.wait()
    print("Gateway capacity (instant engine; audit on PostgreSQL; one gateway process)")
    print(
        f"{'load':>8} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}"
        f" {'CPU ms/req':>11} {'req/s per core':>15}"
    )
    for row in rows:
        print(
            f"{row.load:>8} {row.requests_per_s:>8.0f} {row.p50_ms:>8.1f} "
            f"{row.p90_ms:>8.1f} {row.p99_ms:>8.1f} {row.errors:>7}"
            f" {row.gateway_cpu_ms:>11.2f} {row.cpu_bound_rps:>15.0f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    profile = RESULTS / "gateway-profile.txt"
    if os.environ.get("ENCLAVE_BENCH_PROFILE") == "1" and profile.exists():
        print("Where the gateway's busy time goes (py-spy samples, innermost Enclave module):")
        for part, share in summarize_profile(profile).items():
            print(f"  {share:5.1f}%  {part}")


if __name__ == "__main__":
    main()
