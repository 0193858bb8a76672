"""A deployment of real OS processes for fault tests that ``kill -9`` one of them: gateway
replicas (``enclave serve``) sharing one PostgreSQL database (main and audit) and one Redis,
and workers running the real Consumer over a fake engine (``fake_worker.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis

from gateway.audit.checkpoints import generate_signer
from gateway.audit.pseudonyms import load_or_create_pseudonym_key
from gateway.auth.api_keys import create_key
from gateway.db.migrate import upgrade_to_head
from gateway.db.session import create_engine, create_session_factory
from gateway.queue.protocol import (
    MESSAGE_FIELD,
    WORKER_GROUP,
    decode_job,
    queues_key,
    streamed_flag_key,
    worker_info_key,
)
from tests.audit_records import Logged, read_logged
from tests.conftest import create_database, drop_database
from tests.faults.load import MODEL
from tests.processes import EnclaveProcess, Processes, wait_for

LEASE_TIMEOUT_S = 1.0
GATEWAY_TTL_S = 3.0
"""A gateway silent this long is taken for dead (``ENCLAVE_QUEUE__GATEWAY_TTL_S``)."""
AUDIT_ORIGIN = "enclave.faults.test"


@dataclass
class Deployment:
    database_url: str
    redis_url: str
    state_dir: Path
    processes: Processes

    def gateway(self) -> tuple[EnclaveProcess, str]:
        """A new gateway replica; its process and base URL."""
        return self.processes.gateway()

    def worker(self, worker_id: str, *, capacity: int, batch: int, step_delay_s: float) -> Any:
        """A fake-engine worker process, once it has registered."""
        log_path = self.state_dir / f"{worker_id}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "tests.faults.fake_worker", worker_id,
                    "--capacity", str(capacity), "--batch", str(batch),
                    "--step-delay-s", str(step_delay_s),
                ],
                env={**os.environ, **self.processes.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        handle = EnclaveProcess(worker_id, process, log_path)
        self.processes.started.append(handle)
        client = redis.Redis.from_url(self.redis_url)
        try:

            def is_registered() -> bool:
                if not handle.is_alive():
                    raise RuntimeError(f"worker exited:\n{handle.log_tail()}")
                return bool(client.exists(worker_info_key(worker_id)))

            wait_for(is_registered, timeout_s=30, what=f"worker {worker_id}")
        finally:
            client.close()
        return handle

    async def key(self) -> str:
        engine = create_engine(self.database_url)
        try:
            async with create_session_factory(engine)() as session:
                key = await create_key(session, tenant="acme", user=f"u{uuid.uuid4().hex[:8]}")
        finally:
            await engine.dispose()
        return key.plaintext

    async def audit_rows(self) -> list[Logged]:
        """Every audit record so far, sequenced or pending, in log order."""
        key = load_or_create_pseudonym_key(self.state_dir / "audit-pseudonym.key")
        engine = create_engine(self.database_url)
        try:
            return await read_logged(engine, engine, key)
        finally:
            await engine.dispose()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            env={**os.environ, **self.processes.env},
            capture_output=True,
            text=True,
            check=False,
        )


def migrated_database(postgres_url: str) -> str:
    url = create_database(postgres_url, "faults")
    upgrade_to_head(url)
    return url


def deployment_env(database_url: str, redis_url: str, state_dir: Path) -> dict[str, str]:
    """One environment for every process: short leases and gateway TTL, a signing key for
    checkpoints."""
    private, _ = generate_signer(AUDIT_ORIGIN)
    key_file = state_dir / "audit-signing.key"
    key_file.write_text(private)
    key_file.chmod(0o600)
    return {
        "ENCLAVE_DATABASE__URL": database_url,
        "ENCLAVE_REDIS__URL": redis_url,
        "ENCLAVE_STATE_DIR": str(state_dir),
        "ENCLAVE_QUEUE__LEASE_TIMEOUT_S": str(LEASE_TIMEOUT_S),
        "ENCLAVE_QUEUE__WORKER_TTL_S": "5",
        "ENCLAVE_QUEUE__GATEWAY_TTL_S": str(GATEWAY_TTL_S),
        "ENCLAVE_AUDIT__ORIGIN": AUDIT_ORIGIN,
        "ENCLAVE_AUDIT__SIGNING_KEY_FILE": str(key_file),
    }


@contextlib.asynccontextmanager
async def open_deployment(
    postgres_url: str, redis_url: str, state_dir: Path
) -> AsyncIterator[Deployment]:
    """A fresh database on the server, the given Redis (emptied by the caller); every process
    started in it is stopped (or was killed) on the way out, and the database dropped."""
    database_url = await asyncio.to_thread(migrated_database, postgres_url)
    env = deployment_env(database_url, redis_url, state_dir)
    processes = Processes(env=env, log_dir=state_dir)
    try:
        yield Deployment(database_url, redis_url, state_dir, processes)
    finally:
        await asyncio.to_thread(processes.stop_all)
        await asyncio.to_thread(drop_database, postgres_url, database_url)


async def held_jobs(client: Redis, worker_id: str, model: str = MODEL) -> dict[str, bool]:
    """The jobs ``worker_id`` has claimed and not acknowledged: id -> whether it streamed
    (its streamed flag is set: a token may have reached the client)."""
    held: dict[str, bool] = {}
    for stream in await client.smembers(queues_key(model)):
        entries: Any = await client.xpending_range(
            stream, WORKER_GROUP, "-", "+", 10_000, consumername=worker_id
        )
        for entry in entries:
            entry_id = entry["message_id"]
            found: Any = await client.xrange(stream, entry_id, entry_id)
            if not found:
                continue
            job = decode_job(found[0][1][MESSAGE_FIELD])
            held[job.id] = bool(await client.exists(streamed_flag_key(job.id)))
    return held
