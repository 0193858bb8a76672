"""Streaming throughput: Enclave (client → gateway → Redis → worker) against AsyncLLM in-process.

A wave is 32 concurrent streaming chat requests of 64 output tokens (ignore_eos) on the demo
model. Both paths stay loaded and their waves alternate (E D, D E, E D), so drifting machine
load hits both alike; each wave records the CPU seconds of every process (``other``: the rest
of the machine), which shows that the idle path does not compete. Prints figures; not a test.

    .venv/bin/python -m tests.bench.bench_streaming      (``make bench``)
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from gateway.queue.protocol import ChatMessage, SamplingOptions
from tests.bench.local import cli, local_enclave
from tests.processes import DEMO_MODEL

CONCURRENCY = 32
MAX_TOKENS = 64
WARMUP_MAX_TOKENS = 8
WAVES = 3
MAX_MODEL_LEN = 2048
TARGET_RATIO = 0.90
DISTURBED_SHARE = 0.10  # a wave where other processes took >10% of all CPU time is marked *
RESULTS_PATH = Path("bench-results/bench_streaming.json")

Pids = dict[str, int]
# One request (index, max_tokens) -> (output tokens, seconds to its first text).
Request = Callable[[int, int], Awaitable[tuple[int, float]]]


def prompt(index: int) -> str:
    return f"Story {index}: tell me about a lighthouse keeper who finds a message in a bottle."


@dataclass
class Wave:
    phase: str
    index: int
    requests: int
    output_tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    cpu_s: dict[str, float]

    @property
    def is_disturbed(self) -> bool:
        return self.cpu_s["other"] > DISTURBED_SHARE * (os.cpu_count() or 1) * self.wall_s


def cpu_seconds(groups: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """CPU seconds so far per group of processes, and ``machine``: busy seconds of all CPUs."""
    totals = {}
    for name, members in groups.items():
        totals[name] = sum(sum(p.cpu_times()[:2]) for p in members if p.is_running())
    cpu = psutil.cpu_times()
    totals["machine"] = cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq
    return totals


async def run_wave(
    phase: str, index: int, request: Request, groups: dict[str, list[psutil.Process]], limit: int
) -> Wave:
    before = cpu_seconds(groups)
    start = time.perf_counter()
    results = await asyncio.gather(*(request(i, limit) for i in range(CONCURRENCY)))
    wall_s = time.perf_counter() - start
    used = {name: seconds - before[name] for name, seconds in cpu_seconds(groups).items()}
    used["other"] = max(0.0, used.pop("machine") - sum(used.values()))
    used = {name: round(seconds, 2) for name, seconds in used.items()}
    tokens = sum(n for n, _ in results)
    deciles = statistics.quantiles([s for _, s in results], n=10, method="inclusive")
    p50, p90 = deciles[4], deciles[8]
    return Wave(phase, index, len(results), tokens, wall_s, tokens / wall_s, p50, p90, used)


def gateway_request(base_url: str, key: str) -> Request:
    """Streams through the official openai SDK, as a client of the gateway would."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=300)

    async def send(index: int, max_tokens: int) -> tuple[int, float]:
        start, first_s, tokens = time.perf_counter(), math.nan, 0
        stream = await client.chat.completions.create(
            model=DEMO_MODEL,
            messages=[{"role": "user", "content": prompt(index)}],
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        async for chunk in stream:
            if math.isnan(first_s) and chunk.choices and chunk.choices[0].delta.content:
                first_s = time.perf_counter() - start
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return tokens, first_s

    return send


def direct_request(engine: Any) -> Request:
    """Straight into AsyncLLM through the worker's own VllmEngine (same prompt rendering)."""
    from workers.engine import ChatPrompt

    async def send(index: int, max_tokens: int) -> tuple[int, float]:
        start, first_s, tokens = time.perf_counter(), math.nan, 0
        chat = ChatPrompt((ChatMessage(role="user", content=prompt(index)),))
        sampling = SamplingOptions(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        async for output in engine.generate(f"direct-{uuid.uuid4().hex}", chat, sampling):
            if math.isnan(first_s) and output.text:
                first_s = time.perf_counter() - start
            tokens = output.completion_tokens
        return tokens, first_s

    return send


@contextmanager
def enclave(state_dir: Path, model_path: Path, dtype: str) -> Iterator[tuple[str, str, Pids]]:
    """Redis, migrated SQLite, a key, worker, gateway: yields the gateway's URL, the key and
    the pids of the processes."""
    with local_enclave(
        state_dir,
        ENCLAVE_WORKER__MAX_NUM_SEQS=str(CONCURRENCY),
        ENCLAVE_WORKER__MAX_MODEL_LEN=str(MAX_MODEL_LEN),
        ENCLAVE_WORKER__DTYPE=dtype,
        ENCLAVE_WORKER__CPU_KVCACHE_SPACE_GIB=os.environ["VLLM_CPU_KVCACHE_SPACE"],
    ) as local:
        key = cli(local.env, "keys", "create", "--tenant", "bench", "--user", "bench")
        worker = local.processes.worker(model_path, DEMO_MODEL, local.redis_url)
        gateway, base_url = local.processes.gateway()
        pids = {"gateway": gateway.pid, "worker": worker.pid}
        if local.redis_pid is not None:
            pids["redis"] = local.redis_pid
        yield base_url, key, pids


def process_groups(pids: Pids) -> dict[str, list[psutil.Process]]:
    """bench: this process (client, direct AsyncLLM front end); *-core: the vLLM engine cores."""
    worker_core = psutil.Process(pids["worker"]).children(recursive=True)
    known = {*pids.values(), *(p.pid for p in worker_core)}
    me = psutil.Process()
    direct_core = [p for p in me.children(recursive=True) if p.pid not in known]
    groups = {name: [psutil.Process(pid)] for name, pid in pids.items()}
    return {"bench": [me], **groups, "worker-core": worker_core, "direct-core": direct_core}


async def bench(state_dir: Path, model_path: Path, dtype: str) -> list[Wave]:
    from workers.models import model_digest
    from workers.vllm_engine import start_vllm_engine

    engine = await start_vllm_engine(
        model_path,
        served_model_name=DEMO_MODEL,
        weights_digest=model_digest(model_path),
        max_num_seqs=CONCURRENCY,
        max_model_len=MAX_MODEL_LEN,
        dtype=dtype,
        enforce_eager=True,
        gpu_memory_utilization=0.9,
    )
    try:
        with enclave(state_dir, model_path, dtype) as (base_url, key, pids):
            groups = process_groups(pids)
            paths = {"enclave": gateway_request(base_url, key), "direct": direct_request(engine)}
            for phase, request in paths.items():  # warm-up, not recorded
                await run_wave(phase, 0, request, groups, WARMUP_MAX_TOKENS)
            print(HEADER, flush=True)
            waves = []
            for index in range(1, WAVES + 1):  # alternate: E D, D E, E D
                for phase in ("enclave", "direct")[:: 1 if index % 2 else -1]:
                    waves.append(await run_wave(phase, index, paths[phase], groups, MAX_TOKENS))
                    print_wave(waves[-1])
            return waves
    finally:
        engine.shutdown()


HEADER = (
    f"{'phase':8} {'wave':>4} {'reqs':>4} {'out tok':>7} {'wall s':>7} {'tok/s':>7} "
    f"{'TTFT p50':>8} {'TTFT p90':>8}  CPU s during the wave"
)


def print_wave(wave: Wave) -> None:
    cpu = " ".join(f"{name}={seconds:.1f}" for name, seconds in wave.cpu_s.items())
    mark = "*" if wave.is_disturbed else " "
    print(
        f"{wave.phase:8} {wave.index:>4} {wave.requests:>4} {wave.output_tokens:>7} "
        f"{wave.wall_s:>7.2f} {wave.tokens_per_s:>7.1f}{mark}{wave.ttft_p50_s:>8.3f} "
        f"{wave.ttft_p90_s:>8.3f}  {cpu}",
        flush=True,
    )


def report(waves: list[Wave], config: dict[str, Any]) -> None:
    medians = {
        phase: statistics.median(w.tokens_per_s for w in waves if w.phase == phase)
        for phase in ("enclave", "direct")
    }
    ratio = medians["enclave"] / medians["direct"]
    for phase, median in medians.items():
        print(f"{phase:8} median output tok/s: {median:.1f}")
    print(f"enclave/direct output tok/s ratio: {ratio:.2f} (target >= {TARGET_RATIO:.2f})")
    if any(w.is_disturbed for w in waves):
        print(f"* other processes took >{DISTURBED_SHARE:.0%} of the CPUs: a noisy figure")
    rows = [asdict(w) | {"is_disturbed": w.is_disturbed} for w in waves]
    result = {"config": config, "waves": rows, "median_tokens_per_s": medians, "ratio": ratio}
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH}")


def main() -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the table readable
    from gateway.settings import Settings
    from workers.models import pull_model
    from workers.vllm_engine import choose_dtype

    model_path = pull_model(DEMO_MODEL, Settings().model_dir)
    # Resolved once and given to both paths: "auto" is float32 on CPUs without bf16 kernels.
    dtype = choose_dtype(os.environ.get("ENCLAVE_WORKER__DTYPE", "auto"))
    load_before = os.getloadavg()
    print(f"{CONCURRENCY} streams x {MAX_TOKENS} tokens, {WAVES} waves per path, {dtype=}")
    print(f"load average before: {load_before[0]:.2f} (1 min), {load_before[1]:.2f} (5 min)")
    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as state_dir:
        waves = asyncio.run(bench(Path(state_dir), model_path, dtype))
    gc.collect()  # AsyncLLM's __del__ fails if it first runs at interpreter exit
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    config = dict(
        model=DEMO_MODEL, dtype=dtype, concurrency=CONCURRENCY, cpus=os.cpu_count(),
        max_tokens=MAX_TOKENS, max_model_len=MAX_MODEL_LEN, client="openai AsyncOpenAI",
        kv_cache_gib=os.environ["VLLM_CPU_KVCACHE_SPACE"], load_avg=[load_before, os.getloadavg()],
    )  # fmt: skip
    report(waves, config)


if __name__ == "__main__":  # vLLM starts its engine core in child processes
    main()
