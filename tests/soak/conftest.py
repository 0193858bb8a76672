"""The soak deployment: a real gateway and one vLLM worker on the demo model, the audit log
on PostgreSQL, and a Redis server of its own, so Redis's memory is the deployment's alone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.db.migrate import upgrade_to_head
from gateway.settings import Settings
from tests.conftest import start_private_redis
from tests.processes import DEMO_MODEL, EnclaveProcess, Processes, worker_env
from workers.models import pull_model

MAX_NUM_SEQS = "32"
"""Sequences the worker batches at once; the other clients wait in the queue."""


@dataclass(frozen=True)
class Deployment:
    base_url: str
    redis_url: str
    api_key: str
    gateway: EnclaveProcess
    worker: EnclaveProcess


@pytest.fixture
def soak_deployment(make_postgres_url: Callable[[], str], tmp_path: Path) -> Iterator[Deployment]:
    redis_server, redis_url = start_private_redis(tmp_path)
    database_url = make_postgres_url()
    upgrade_to_head(database_url)
    model_path = pull_model(DEMO_MODEL, Settings().model_dir, progress=lambda _: None)
    env = worker_env(
        redis_url,
        ENCLAVE_DATABASE__URL=database_url,
        ENCLAVE_STATE_DIR=str(tmp_path),
        ENCLAVE_WORKER__MAX_NUM_SEQS=MAX_NUM_SEQS,
    )
    processes = Processes(env=env, log_dir=tmp_path)
    try:
        worker = processes.worker(model_path, DEMO_MODEL, redis_url)
        gateway, base_url = processes.gateway()
        key = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "keys", "create", "--tenant", "soak",
             "--user", "soak"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        yield Deployment(base_url, redis_url, key, gateway, worker)
    finally:
        processes.stop_all()
        redis_server.terminate()
        redis_server.wait(timeout=30)
