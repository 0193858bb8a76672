"""Soak: 100 concurrent streaming clients against a real gateway and vLLM worker.

``ENCLAVE_SOAK_SECONDS`` of load after a warm-up (60 s by default, for CI; ``make soak``
runs 600). Passes when:
- every request succeeded (200, content, exactly ``MAX_TOKENS`` tokens, ``[DONE]``);
- neither the gateway's nor the worker's process tree (vLLM's engine core included) grew
  its resident memory by 10% or more from the end of the warm-up to the end of the load;
- Redis is flat once the queue has drained: no more than ``KEYS_PER_DEPLOYMENT`` keys and
  ``KEY_BYTES_SLACK`` bytes of data more than before the load (nothing kept per request),
  and ``used_memory`` within max(10%, 1 MiB) of before, plus what the connections opened
  since take. "Before" is after one burst of a request per client, so the connection pools
  have grown to the load's concurrency (and stay so: idle connections are kept open).
The figures are printed (``-s``) and written to bench-results/soak.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.queue.protocol import PRIORITIES, backlog_key
from tests.faults.load import no_pending_jobs, poll
from tests.processes import DEMO_MODEL
from tests.soak.clients import Load, Outcome
from tests.soak.conftest import Deployment
from tests.soak.redis_memory import (
    KeyShapes,
    RedisMemory,
    added_keys,
    connection_bytes,
    key_shapes,
    memory_stats,
    read_redis_memory,
)
from tests.soak.samples import Samples, sample_forever

pytestmark = pytest.mark.e2e

CLIENTS = 100
SOAK_S = float(os.environ.get("ENCLAVE_SOAK_SECONDS", "60"))
WARMUP_S = max(25.0, SOAK_S / 10)
"""Load before the baseline RSS: vLLM's and the allocators' caches fill in the first
requests, which is not growth."""
WINDOW_S = max(10.0, SOAK_S / 20)
"""RSS at a moment is the median of the samples of this long (starting at the end of the
warm-up; ending at the end of the load)."""
SAMPLE_INTERVAL_S = 2.0
MAX_RSS_GROWTH = 0.10
REDIS_SLACK_BYTES = 1024 * 1024
REDIS_SLACK_FRACTION = 0.10
KEYS_PER_DEPLOYMENT = 50
"""Keys the load may leave for good: queue streams, fairness counters, per-minute
counters, quota windows of one tenant: a number that does not grow with requests."""
KEY_BYTES_SLACK = 32 * 1024
"""What those keys may hold: a stream's last node of entries, a few counters."""
DRAIN_TIMEOUT_S = 90.0
RESULTS_PATH = Path("bench-results/soak.json")


@dataclass(frozen=True)
class Figures:
    soak_s: float
    warmup_s: float
    clients: int
    requests: int
    errors: int
    requests_per_s: float
    rss_warm_mib: dict[str, float]
    rss_end_mib: dict[str, float]
    rss_growth_pct: dict[str, float]
    rss_processes_mib: dict[str, dict[str, tuple[float, float]]]
    """Each process of each tree apart: (at the end of the warm-up, at the end)."""
    redis_before: dict[str, int]
    redis_peak_used_bytes: int
    redis_after: dict[str, int]
    redis_connection_bytes: int
    redis_used_limit: int
    redis_stats_change: dict[str, int]
    """MEMORY STATS after the load less before it, where they differ: what the bytes are."""
    keys_added: KeyShapes

    def table(self) -> str:
        before, after = self.redis_before, self.redis_after
        lines = [
            f"soak: {self.clients} clients, {self.warmup_s:g} s warm-up + {self.soak_s:g} s",
            f"requests completed {self.requests}, errors {self.errors}, "
            f"{self.requests_per_s:.1f} requests/s",
            *(
                f"RSS {name:8} warm-up {self.rss_warm_mib[name]:8.1f} MiB   end "
                f"{self.rss_end_mib[name]:8.1f} MiB   growth {self.rss_growth_pct[name]:+.2f}%"
                for name in self.rss_warm_mib
            ),
            *(
                f"    {process:24} warm-up {warm:8.1f} MiB   end {end:8.1f} MiB"
                for processes in self.rss_processes_mib.values()
                for process, (warm, end) in processes.items()
            ),
            f"Redis used_memory before {before['used_bytes']} B, peak "
            f"{self.redis_peak_used_bytes} B, after {after['used_bytes']} B "
            f"(limit {self.redis_used_limit} B)",
            f"Redis connections before {before['connections']}, after {after['connections']} "
            f"({self.redis_connection_bytes} B each)",
            f"Redis keys before {before['keys']} ({before['key_bytes']} B), after "
            f"{after['keys']} ({after['key_bytes']} B)",
            f"keys added by the load (shape: count, bytes): {self.keys_added}",
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class Flatness:
    """Redis after the load against Redis before it."""

    before: RedisMemory
    connection_bytes: int

    def used_limit(self, after: RedisMemory) -> int:
        """Before, plus max(10%, 1 MiB), plus the connections opened since."""
        used = self.before.used_bytes
        opened = max(0, after.connections - self.before.connections)
        slack = max(REDIS_SLACK_BYTES, int(used * REDIS_SLACK_FRACTION))
        return used + slack + opened * self.connection_bytes

    def faults(self, after: RedisMemory) -> list[str]:
        faults = []
        if after.keys > self.before.keys + KEYS_PER_DEPLOYMENT:
            faults.append(f"{after.keys - self.before.keys} keys more than before the load")
        if after.key_bytes > self.before.key_bytes + KEY_BYTES_SLACK:
            faults.append(f"keys hold {after.key_bytes - self.before.key_bytes} B more")
        if after.used_bytes > self.used_limit(after):
            faults.append(f"used_memory {after.used_bytes} B > {self.used_limit(after)} B")
        return faults


def processes_mib(
    samples: Samples, name: str, warm_at: float, end_at: float
) -> dict[str, tuple[float, float]]:
    warm, end = samples.parts_at(name, warm_at), samples.parts_at(name, end_at)
    return {p: (warm.get(p, 0) / 2**20, end.get(p, 0) / 2**20) for p in {**warm, **end}}


async def is_drained(redis: Redis) -> bool:
    """No job waits for a worker or is held by one."""
    if not await no_pending_jobs(redis, DEMO_MODEL):
        return False
    backlogs: list[Any] = [await redis.hvals(backlog_key(DEMO_MODEL, p)) for p in PRIORITIES]
    return all(int(n) == 0 for values in backlogs for n in values)


async def run_load(deployment: Deployment) -> tuple[list[Outcome], float]:
    """The load for warm-up plus soak; the outcomes and when the warm-up ended."""
    load = Load(deployment.base_url, deployment.api_key, CLIENTS)
    load.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < WARMUP_S + SOAK_S:
            for process in (deployment.gateway, deployment.worker):
                assert process.is_alive(), f"{process.name} exited:\n{process.log_tail()}"
            failed = [o for o in load.outcomes if not o.is_ok]
            assert not failed, f"{len(failed)} failed, first: {failed[0].describe()}"
            await asyncio.sleep(1.0)  # the watch's period; the load runs on its own
    except BaseException:
        await load.cancel()
        raise
    return await load.stop(), started + WARMUP_S


async def test_100_streaming_clients_without_errors_growth_or_leftovers(
    soak_deployment: Deployment,
) -> None:
    deployment = soak_deployment
    redis = Redis.from_url(deployment.redis_url)
    pids = {"gateway": deployment.gateway.pid, "worker": deployment.worker.pid}
    samples = Samples()
    try:
        primed = await Load(deployment.base_url, deployment.api_key, CLIENTS).burst()
        failed = [o.describe() for o in primed if not o.is_ok]
        assert not failed, f"the first burst failed: {failed[:3]}"
        await poll(lambda: is_drained(redis), timeout_s=DRAIN_TIMEOUT_S, what="the queue")
        flatness = Flatness(
            await read_redis_memory(redis), await connection_bytes(deployment.redis_url)
        )
        stats_before, keys_before = await memory_stats(redis), await key_shapes(redis)
        sampler = asyncio.create_task(sample_forever(samples, pids, redis, SAMPLE_INTERVAL_S))
        try:
            outcomes, warm_at = await run_load(deployment)
        finally:
            sampler.cancel()
        load_end = max(o.ended_at for o in outcomes)
        await poll(lambda: is_drained(redis), timeout_s=DRAIN_TIMEOUT_S, what="the queue")

        async def is_flat() -> bool:
            return not flatness.faults(await read_redis_memory(redis))

        with contextlib.suppress(TimeoutError):  # the assertions below say by how much
            await poll(is_flat, timeout_s=DRAIN_TIMEOUT_S, what="Redis back to flat")
        after = await read_redis_memory(redis)
        stats_after, keys_after = await memory_stats(redis), await key_shapes(redis)
    finally:
        await redis.aclose()

    warm = {n: samples.rss_median(n, warm_at, warm_at + WINDOW_S) for n in pids}
    end = {n: samples.rss_median(n, load_end - WINDOW_S, load_end) for n in pids}
    growth = {n: (end[n] - warm[n]) / warm[n] for n in pids}
    errors = [o for o in outcomes if not o.is_ok]
    figures = Figures(
        soak_s=SOAK_S,
        warmup_s=WARMUP_S,
        clients=CLIENTS,
        requests=len(outcomes) - len(errors),
        errors=len(errors),
        requests_per_s=len(outcomes) / (load_end - (warm_at - WARMUP_S)),
        rss_warm_mib={n: warm[n] / 2**20 for n in pids},
        rss_end_mib={n: end[n] / 2**20 for n in pids},
        rss_growth_pct={n: 100 * growth[n] for n in pids},
        rss_processes_mib={n: processes_mib(samples, n, warm_at, load_end) for n in pids},
        redis_before=asdict(flatness.before),
        redis_peak_used_bytes=max(v for _, v in samples.redis_used),
        redis_after=asdict(after),
        redis_connection_bytes=flatness.connection_bytes,
        redis_used_limit=flatness.used_limit(after),
        redis_stats_change={
            k: v - stats_before.get(k, 0)
            for k, v in stats_after.items()
            if v != stats_before.get(k, 0)
        },
        keys_added=added_keys(keys_before, keys_after),
    )
    RESULTS_PATH.parent.mkdir(exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    print("\n" + figures.table())

    assert not errors, f"{len(errors)} of {len(outcomes)} failed, first: {errors[0].describe()}"
    assert len(outcomes) >= CLIENTS, "fewer requests than clients: the load did not run"
    for name in pids:
        assert growth[name] < MAX_RSS_GROWTH, f"{name} RSS grew {100 * growth[name]:.1f}%"
    assert not flatness.faults(after), f"Redis not flat: {flatness.faults(after)}"
