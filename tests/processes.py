"""Real Enclave processes for end-to-end tests and benchmarks: gateway and workers.

Each process runs ``python -m gateway.cli …`` with its own environment, logs to a file,
and is stopped with SIGTERM (or killed with SIGKILL by fault tests).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from gateway.demo import stop_process
from gateway.queue.protocol import decode_worker_info, worker_info_key, workers_index_key

DEMO_MODEL = "smollm2-135m"
EMBEDDING_MODEL = "minilm-l6"
WORKER_START_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.05
) -> float:
    """Poll a condition another process makes true; return the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - start


@dataclass
class EnclaveProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    management_url: str = ""
    """Its management listener (``/healthz``, ``/readyz``, ``/metrics``)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 60) -> int:
        return stop_process(self.process, timeout_s)

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crashed host or container would:
        vLLM's engine-core child does not outlive it."""
        self._kill_group()
        self.process.wait()

    def pause(self) -> None:
        """SIGSTOP the process group: a process that stops answering without dying (a
        stalled VM, a debugger, a long GC pause)."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@dataclass
class Processes:
    """Starts gateway and worker processes sharing one environment; stops them all."""

    env: dict[str, str]
    log_dir: Path
    started: list[EnclaveProcess] = field(default_factory=list)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> EnclaveProcess:
        log_path = self.log_dir / f"{name}-{len(self.started)}.log"
        management_port = free_port()
        own = {"ENCLAVE_HTTP__MANAGEMENT_PORT": str(management_port), **(env or {})}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *args],
                env={**os.environ, **self.env, **own},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so kill() takes vLLM's too
            )
        handle = EnclaveProcess(name, process, log_path, f"http://127.0.0.1:{management_port}")
        self.started.append(handle)
        return handle

    def gateway(self, env: dict[str, str] | None = None) -> tuple[EnclaveProcess, str]:
        port = free_port()
        handle = self.start("gateway", "serve", "--port", str(port), env=env)
        base_url = f"http://127.0.0.1:{port}"

        def is_up() -> bool:
            if not handle.is_alive():
                raise RuntimeError(f"gateway exited:\n{handle.log_tail()}")
            try:
                with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(is_up, timeout_s=60, what="the gateway")
        return handle, base_url

    def worker(
        self,
        model_path: Path,
        served_name: str,
        redis_url: str,
        env: dict[str, str] | None = None,
    ) -> EnclaveProcess:
        handle = self.start(
            f"worker-{served_name}",
            "worker",
            "--model",
            str(model_path),
            "--served-model-name",
            served_name,
            env=env,
        )
        wait_for(
            lambda: self._is_registered(handle, redis_url),
            timeout_s=WORKER_START_TIMEOUT_S,
            what=f"worker {served_name}",
            interval_s=0.5,
        )
        return handle

    @staticmethod
    def _is_registered(handle: EnclaveProcess, redis_url: str) -> bool:
        if not handle.is_alive():
            raise RuntimeError(f"worker exited:\n{handle.log_tail()}")
        return worker_id_of(redis_url, handle.pid) is not None

    def stop_all(self) -> None:
        for handle in reversed(self.started):
            handle.stop()


def worker_id_of(redis_url: str, pid: int) -> str | None:
    """The registered worker id of the worker process with this pid, if registered."""
    client = redis.Redis.from_url(redis_url)
    try:
        for worker_id in client.zrange(workers_index_key(), 0, -1):
            blob = client.get(worker_info_key(worker_id.decode()))
            if blob is not None and decode_worker_info(blob).pid == pid:
                return str(worker_id.decode())
        return None
    finally:
        client.close()


def worker_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Settings for small CPU workers that several can share one test machine."""
    return {
        "ENCLAVE_REDIS__URL": redis_url,
        "ENCLAVE_WORKER__MAX_MODEL_LEN": "2048",
        "ENCLAVE_WORKER__CPU_KVCACHE_SPACE_GIB": "1",
        **extra,
    }
