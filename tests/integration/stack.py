"""An in-process stack for integration tests: the real app on real PostgreSQL and Redis,
with a real Consumer driving a FakeEngine (no model)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.audit.checkpoints import Verifier, generate_signer
from gateway.audit.pseudonyms import load_or_create_pseudonym_key
from gateway.auth.api_keys import create_key
from gateway.db.migrate import upgrade_to_head
from gateway.db.session import create_engine, create_session_factory
from gateway.settings import (
    AuditSettings,
    DatabaseSettings,
    HttpSettings,
    OidcSettings,
    OllamaSettings,
    QueueSettings,
    RedisSettings,
    Settings,
)
from gateway.telemetry import tracer_of
from tests.audit_records import Logged, read_logged
from tests.fakes.engine import FakeEngine
from tests.processes import free_port
from workers.consumer import Consumer


@dataclass
class Stack:
    client: httpx.AsyncClient
    redis: Redis
    engine: FakeEngine
    db: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    audit_db: AsyncEngine
    pseudonym_key: bytes
    management_url: str = ""
    """The gateway's management listener, when the stack was opened with one."""
    app: Any = None
    """The Litestar app, for tests that look inside the gateway (its state after startup)."""

    async def key(
        self,
        tenant: str = "acme",
        user: str = "alice",
        expires_at: datetime | None = None,
        roles: frozenset[str] = frozenset(),
    ) -> str:
        """A service key of a local user (created with its tenant when new) granted ``roles``."""
        async with self.sessions() as session:
            new = await create_key(
                session, tenant=tenant, user=user, expires_at=expires_at, roles=roles
            )
        return new.plaintext

    async def audit_rows(self) -> list[Logged]:
        """Every audit record so far, sequenced or pending, in log order."""
        return await read_logged(self.audit_db, self.db, self.pseudonym_key)


def signed_audit(tmp_path: Path, origin: str, **settings: Any) -> tuple[AuditSettings, Verifier]:
    """Audit settings with a fresh checkpoint signing key (and key files) under tmp_path,
    and the verifier of that key."""
    private, public = generate_signer(origin)
    key_file = tmp_path / "audit.key"
    key_file.write_text(private)
    key_file.chmod(0o600)
    audit = AuditSettings(
        origin=origin,
        signing_key_file=key_file,
        pseudonym_key_file=tmp_path / "pseudonym.key",
        content_key_file=tmp_path / "content.key",
        **settings,
    )
    return audit, Verifier.from_key_string(public)


def stack_settings(
    database_url: str,
    redis_url: str,
    audit_url: str | None = None,
    oidc: OidcSettings | None = None,
    audit: AuditSettings | None = None,
    queue: QueueSettings | None = None,
    ollama: OllamaSettings | None = None,
    management_port: int = 0,
    max_body_bytes: int = 64 * 1024,
) -> Settings:
    audit = audit or AuditSettings()
    return Settings(
        database=DatabaseSettings(url=database_url),  # type: ignore[arg-type]
        audit=audit.model_copy(update={"database_url": audit_url and SecretStr(audit_url)}),
        redis=RedisSettings(url=redis_url),  # type: ignore[arg-type]
        http=HttpSettings(max_body_bytes=max_body_bytes, management_port=management_port),
        queue=queue or QueueSettings(lease_timeout_s=1.0, request_timeout_s=30.0, worker_ttl_s=5.0),
        oidc=oidc or OidcSettings(),
        ollama=ollama or OllamaSettings(),
    )


@contextlib.asynccontextmanager
async def run_consumer(
    redis: Redis, engine: FakeEngine, worker_id: str = "worker-1", **kwargs: Any
) -> AsyncIterator[Consumer]:
    consumer = Consumer(
        redis, engine, worker_id=worker_id, lease_timeout_s=1.0, worker_ttl_s=5.0, **kwargs
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(consumer.ready.wait(), 10)
    try:
        yield consumer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def serve(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """The app on a real HTTP server in this event loop, so disconnects are real."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)  # uvicorn offers no started event to await
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def open_stack(
    database_url: str,
    redis_url: str,
    engine: FakeEngine,
    audit_url: str | None = None,
    oidc: OidcSettings | None = None,
    audit: AuditSettings | None = None,
    queue: QueueSettings | None = None,
    ollama: OllamaSettings | None = None,
    tracer_provider: TracerProvider | None = None,
    management_port: int = 0,
    max_body_bytes: int = 64 * 1024,
) -> AsyncIterator[Stack]:
    await asyncio.to_thread(upgrade_to_head, database_url)
    settings = stack_settings(
        database_url,
        redis_url,
        audit_url,
        oidc,
        audit,
        queue,
        ollama,
        management_port,
        max_body_bytes,
    )
    db = create_engine(database_url)
    audit_db = create_engine(audit_url) if audit_url else db
    redis = Redis.from_url(redis_url)
    app = create_app(settings, tracer_provider)
    try:
        async with (
            run_consumer(redis, engine, tracer=tracer_of(tracer_provider)),
            serve(app) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        ):
            key = await asyncio.to_thread(load_or_create_pseudonym_key, settings.pseudonym_key_path)
            yield Stack(
                client,
                redis,
                engine,
                db,
                # The test's writes drop the app's row caches as the app's own would: tests
                # not about the cache need not wait for PostgreSQL's notification to arrive
                # (tests/integration/test_row_cache.py writes from elsewhere, and waits).
                create_session_factory(db, after_write_commit=app.state.row_changes.changed),
                audit_db,
                key,
                f"http://127.0.0.1:{management_port}" if management_port else "",
                app,
            )
    finally:
        await redis.aclose()
        await db.dispose()
        if audit_db is not db:
            await audit_db.dispose()
