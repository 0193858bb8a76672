"""The soak test's samples, taken on a timer: resident memory of process trees, Redis's memory.

RSS is summed over a process and all its descendants: vLLM runs its engine core in a
spawned child, which holds the model and the KV cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field

import psutil
from redis.asyncio import Redis

from tests.soak.redis_memory import used_memory


def tree_rss_bytes(pid: int) -> dict[str, int]:
    """Resident memory of the process ``pid`` and of every descendant of it, by
    ``name:pid`` (vLLM names its processes ``VLLM::EngineCore``, ``VLLM::Worker``)."""
    parent = psutil.Process(pid)
    tree = {f"{parent.name()}:{pid}": int(parent.memory_info().rss)}
    for child in parent.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # a child may exit between calls
            tree[f"{child.name()}:{child.pid}"] = int(child.memory_info().rss)
    return tree


@dataclass
class Samples:
    """Readings taken every ``interval_s`` while the load runs: (monotonic time, value)."""

    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """The sum over each tree."""
    parts: dict[str, list[tuple[float, dict[str, int]]]] = field(default_factory=dict)
    """Each tree's processes apart."""
    redis_used: list[tuple[float, int]] = field(default_factory=list)

    def rss_between(self, name: str, start: float, end: float) -> list[int]:
        return [value for at, value in self.rss[name] if start <= at <= end]

    def rss_median(self, name: str, start: float, end: float) -> int:
        """The median RSS of one process tree over [start, end]: one sample's noise (a
        request's buffers, a garbage collection) is not growth."""
        values = self.rss_between(name, start, end)
        if not values:
            raise AssertionError(f"no RSS sample of {name} between {start:.1f} and {end:.1f}")
        return int(statistics.median(values))

    def parts_at(self, name: str, at: float) -> dict[str, int]:
        """Each process of one tree apart, in the sample nearest to ``at``."""
        return min(self.parts[name], key=lambda sample: abs(sample[0] - at))[1]


async def sample_forever(
    samples: Samples, pids: dict[str, int], redis: Redis, interval_s: float
) -> None:
    """Sample every tree's RSS and Redis's used memory on a timer until cancelled."""
    while True:
        now = time.monotonic()
        for name, pid in pids.items():
            tree = tree_rss_bytes(pid)
            samples.rss.setdefault(name, []).append((now, sum(tree.values())))
            samples.parts.setdefault(name, []).append((now, tree))
        samples.redis_used.append((now, await used_memory(redis)))
        await asyncio.sleep(interval_s)  # a sampling period, not a synchronisation
