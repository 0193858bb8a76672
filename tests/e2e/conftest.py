"""Real processes for end-to-end tests: a gateway and a vLLM worker on the demo model,
PostgreSQL and Redis from the session fixtures, the official openai SDK as the client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from gateway.audit.pseudonyms import load_or_create_pseudonym_key
from gateway.auth.api_keys import create_key
from gateway.db.migrate import upgrade_to_head
from gateway.db.session import create_engine, create_session_factory
from gateway.settings import Settings
from tests.audit_records import Logged, read_logged
from tests.conftest import create_database, drop_database
from tests.e2e.browser import browser, page  # noqa: F401  (headless Chromium for the console)
from tests.e2e.console_stack import console  # noqa: F401  (the console's deployment)
from tests.integration.sso import provider_settings
from tests.oidc_provider import ENCLAVE_AUDIENCE, OidcProvider
from tests.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.processes import DEMO_MODEL, EMBEDDING_MODEL, Processes, worker_env
from workers.models import pull_model

LEASE_TIMEOUT_S = "3"


@dataclass(frozen=True)
class Cluster:
    """The shared e2e deployment: one gateway, one worker serving the demo model."""

    base_url: str
    database_url: str
    redis_url: str
    model_path: Path
    processes: Processes
    api_key: str

    def client(self, api_key: str | None = None, **kwargs: object) -> openai.OpenAI:
        options: dict[str, Any] = {"max_retries": 0, "timeout": 120.0, **kwargs}
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key=api_key or self.api_key, **options
        )

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            env={**os.environ, **self.processes.env},
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    def create_key(self, expires_at: datetime | None = None) -> str:
        async def create() -> str:
            engine = create_engine(self.database_url)
            try:
                async with create_session_factory(engine)() as session:
                    key = await create_key(session, tenant="e2e", user="bob", expires_at=expires_at)
            finally:
                await engine.dispose()
            return key.plaintext

        return asyncio.run(create())

    def audit_rows(self, request_id: str | None = None) -> list[Logged]:
        """The audit records so far (of one request), sequenced or pending, in log order."""
        state_dir = Path(self.processes.env["ENCLAVE_STATE_DIR"])
        key = load_or_create_pseudonym_key(state_dir / "audit-pseudonym.key")

        async def read() -> list[Logged]:
            engine = create_engine(self.database_url)
            try:
                return await read_logged(engine, engine, key)
            finally:
                await engine.dispose()

        rows = asyncio.run(read())
        return [r for r in rows if request_id is None or r.request_id == request_id]


@pytest.fixture(scope="session")
def e2e_redis_url(redis_url: str) -> str:
    """Its own Redis database, so integration tests' FLUSHDB never touches it."""
    return urlsplit(redis_url)._replace(path="/7").geturl()


@pytest.fixture(scope="session")
def e2e_database_url(postgres_url: str) -> Iterator[str]:
    url = create_database(postgres_url, "e2e")
    upgrade_to_head(url)
    yield url
    drop_database(postgres_url, url)


def issuers_env(provider: OidcProvider) -> str:
    """ENCLAVE_OIDC__ISSUERS trusting the real provider, as an operator would write it, with
    the compliance console's client."""
    issuer = provider_settings(provider).model_copy(
        update={
            "console_client_id": provider.console_client_id,
            "console_resource": ENCLAVE_AUDIENCE,
        }
    )
    document = issuer.model_dump(mode="json")
    secret = issuer.introspection_client_secret
    document["introspection_client_secret"] = secret.get_secret_value() if secret else None
    return json.dumps([document])


@pytest.fixture(scope="session")
def trace_receiver() -> Iterator[OtlpReceiver]:
    """Where the cluster's gateway and worker send their traces."""
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="session")
def cluster(
    e2e_database_url: str,
    e2e_redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    oidc_provider: OidcProvider,
    trace_receiver: OtlpReceiver,
) -> Iterator[Cluster]:
    model_path = pull_model(DEMO_MODEL, Settings().model_dir, progress=lambda _: None)
    log_dir = tmp_path_factory.mktemp("e2e-logs")
    env = worker_env(
        e2e_redis_url,
        ENCLAVE_DATABASE__URL=e2e_database_url,
        ENCLAVE_STATE_DIR=str(log_dir),
        ENCLAVE_QUEUE__LEASE_TIMEOUT_S=LEASE_TIMEOUT_S,
        ENCLAVE_QUEUE__WORKER_TTL_S="5",
        ENCLAVE_WORKER__MAX_NUM_SEQS="16",
        ENCLAVE_OIDC__ISSUERS=issuers_env(oidc_provider),
        ENCLAVE_TELEMETRY__OTLP_ENDPOINT=trace_receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",  # export batched spans within 0.1 s
    )
    processes = Processes(env=env, log_dir=log_dir)
    try:
        processes.worker(model_path, DEMO_MODEL, e2e_redis_url)
        _, base_url = processes.gateway()
        partial = Cluster(base_url, e2e_database_url, e2e_redis_url, model_path, processes, "")
        key = partial.cli("keys", "create", "--tenant", "e2e", "--user", "alice")
        yield Cluster(base_url, e2e_database_url, e2e_redis_url, model_path, processes, key)
    finally:
        processes.stop_all()


@pytest.fixture(scope="session")
def embedding_model(cluster: Cluster) -> Iterator[Path]:
    """A worker serving the demo embedding model beside the chat worker, started by the
    first test that asks for it; the model's directory."""
    model_path = pull_model(EMBEDDING_MODEL, Settings().model_dir, progress=lambda _: None)
    own = {"ENCLAVE_WORKER__MAX_MODEL_LEN": "256"}  # the model's own; the chat worker's is 2048
    worker = cluster.processes.worker(model_path, EMBEDDING_MODEL, cluster.redis_url, env=own)
    try:
        yield model_path
    finally:
        worker.stop()
