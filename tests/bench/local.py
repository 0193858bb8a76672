"""What every benchmark starts from: Redis (embedded unless ENCLAVE_REDIS__URL is set), a
migrated SQLite database in a state directory, and a way to start gateways and workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.processes import Processes, worker_env


@dataclass
class Local:
    redis_url: str
    redis_pid: int | None
    """The embedded Redis's pid, None when an outside Redis is used."""
    env: dict[str, str]
    processes: Processes


def cli(env: dict[str, str], *args: str) -> str:
    """Run ``enclave <args>`` with ``env``; its standard output."""
    command = [sys.executable, "-m", "gateway.cli", *args]
    run = subprocess.run(command, env={**os.environ, **env}, check=True, capture_output=True)
    return run.stdout.decode().strip()


@contextmanager
def local_enclave(state_dir: Path, **settings: str) -> Iterator[Local]:
    """Redis and a migrated database; every process started through it is stopped at exit.
    ``settings`` are more ENCLAVE_* variables for every process."""
    from gateway.demo import start_embedded_redis

    redis_url, redis_process = os.environ.get("ENCLAVE_REDIS__URL"), None
    if not redis_url:
        redis_process, redis_url = start_embedded_redis(state_dir)
    db_url = f"sqlite+aiosqlite:///{state_dir / 'enclave.db'}"
    env = worker_env(
        redis_url,
        ENCLAVE_STATE_DIR=str(state_dir),
        ENCLAVE_DATABASE__URL=db_url,
        ENCLAVE_AUDIT__DATABASE_URL=db_url,
        **settings,
    )
    processes = Processes(env, state_dir)
    try:
        cli(env, "migrate")
        yield Local(redis_url, redis_process.pid if redis_process else None, env, processes)
    finally:
        processes.stop_all()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait()
