"""create_app(settings) -> Litestar: the only wiring point."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from importlib.metadata import version

import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway import telemetry
from gateway.api.admin import (
    AdminKeysController,
    AdminLimitsController,
    AdminTenantsController,
    AdminUsersController,
)
from gateway.api.audit import AuditKeyController, CheckpointKey
from gateway.api.chat_completions import ChatCompletionsController
from gateway.api.completions import CompletionsController
from gateway.api.compliance import ComplianceController, SubjectsController
from gateway.api.embeddings import EmbeddingsController
from gateway.api.health import HealthController, Readiness
from gateway.api.intake import Gate
from gateway.api.models import ModelsController
from gateway.api.ollama.embed import OllamaEmbedController
from gateway.api.ollama.generation import OllamaGenerationController
from gateway.api.ollama.models import OllamaModelsController
from gateway.api.personal_keys import PersonalKeysController
from gateway.app_state import Databases
from gateway.audit.checkpointer import run_checkpointer
from gateway.audit.checkpoints import Signer, Verifier, load_signer
from gateway.audit.compliance import Compliance
from gateway.audit.content import ContentVault, run_retention
from gateway.audit.pseudonyms import load_or_create_pseudonym_key
from gateway.audit.records import AuditLog
from gateway.audit.sealing import load_or_create_master_key
from gateway.audit.sequencer import run_sequencer
from gateway.audit.writer import PendingWriter
from gateway.auth.authenticator import Authenticator
from gateway.auth.identity_providers import IdentityProvider
from gateway.console.access import ConsoleServices
from gateway.console.router import console_router, template_config
from gateway.console.sessions import SessionStore
from gateway.custody import OutcomeCustody
from gateway.db.changes import change_feed_for
from gateway.db.row_cache import RowCache
from gateway.db.session import create_session_factory
from gateway.errors import handle_exception
from gateway.inference import InferenceService
from gateway.management import ManagementServer
from gateway.metrics import GatewayMetrics, MetricsExport
from gateway.queue.client import RedisJobQueue
from gateway.quotas.admission import Admission
from gateway.quotas.service import Quotas
from gateway.redis_client import open_redis
from gateway.settings import (
    ConsoleSettings,
    HttpSettings,
    OidcSettings,
    OllamaSettings,
    Settings,
)


def provide_inference(state: State) -> InferenceService:
    service: InferenceService = state.inference
    return service


def provide_gate(state: State) -> Gate:
    gate: Gate = state.gate
    return gate


def provide_authenticator(state: State) -> Authenticator:
    authenticator: Authenticator = state.authenticator
    return authenticator


def provide_compliance(state: State) -> Compliance:
    compliance: Compliance = state.compliance
    return compliance


def provide_databases(state: State) -> Databases:
    databases: Databases = state.databases
    return databases


def provide_console(state: State) -> ConsoleServices:
    console: ConsoleServices = state.console
    return console


def provide_readiness(state: State) -> Readiness:
    readiness: Readiness = state.readiness
    return readiness


def provide_redis(state: State) -> Redis:
    redis: Redis = state.redis
    return redis


def provide_sessions(state: State) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = state.sessions
    return sessions


def openapi_config() -> OpenAPIConfig:
    """The schema at /schema/openapi.json and .yaml; no HTML viewer, as those load from CDNs."""
    return OpenAPIConfig(
        title="Enclave",
        version=version("enclave"),
        render_plugins=[JsonRenderPlugin(), YamlRenderPlugin()],
        components=Components(
            security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
        ),
        use_handler_docstrings=True,
    )


logger = logging.getLogger("enclave.gateway")
SLOW_SHUTDOWN_STEP_S = 2.0


async def shutdown_step(name: str, step: Awaitable[object]) -> None:
    """Await one step of stopping; a slow one is logged by name, so a stop that outlasts
    its deadline says where it was."""
    started = time.monotonic()
    try:
        await step
    finally:
        took = time.monotonic() - started
        if took >= SLOW_SHUTDOWN_STEP_S:
            logger.warning("stopping: %s took %.1f s", name, took)


def tracing_plugin(provider: TracerProvider) -> OpenTelemetryPlugin:
    """Litestar's own OpenTelemetry plugin: a server span per request (probes left out)."""
    return OpenTelemetryPlugin(
        OpenTelemetryConfig(tracer_provider=provider, exclude=["/healthz", "/readyz"])
    )


def start_background_tasks(
    settings: Settings,
    sequencer_db: AsyncEngine,
    vault: ContentVault,
    quotas: Quotas,
    signer: Signer | None,
    stop: asyncio.Event,
) -> list[asyncio.Task[None]]:
    """The audit sequencer (first), quota lease renewals, content retention and, with a
    signing key, the checkpointer; each runs until ``stop`` is set."""
    tasks = [
        asyncio.create_task(run_sequencer(sequencer_db, stop)),
        asyncio.create_task(quotas.run_renewals(stop)),
        asyncio.create_task(
            run_retention(vault, sequencer_db, settings.audit.metadata_retention_days, stop)
        ),
    ]
    if signer is not None:
        tasks.append(
            asyncio.create_task(
                run_checkpointer(
                    sequencer_db,
                    signer,
                    settings.audit.origin,
                    stop,
                    directory=settings.audit.checkpoint_dir,
                    interval_s=settings.audit.checkpoint_interval_s,
                    every_records=settings.audit.checkpoint_every_records,
                )
            )
        )
    return tasks


def create_app(settings: Settings, tracer_provider: TracerProvider | None = None) -> Litestar:
    """The app; traces go to ``tracer_provider`` if given (tests), else where the settings
    say (nowhere by default)."""
    own_provider = tracer_provider is None
    provider = tracer_provider or telemetry.tracer_provider(settings.telemetry, "gateway")
    signer = (
        load_signer(settings.audit.signing_key_file) if settings.audit.signing_key_file else None
    )
    checkpoint_key = (
        CheckpointKey(settings.audit.origin, signer.verifier().key_string) if signer else None
    )

    verifier = (
        Verifier.from_key_string(settings.audit.verifier_key)
        if settings.audit.verifier_key
        else signer.verifier()
        if signer
        else None
    )

    def provide_checkpoint_key() -> CheckpointKey | None:
        return checkpoint_key

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        databases = Databases.open(settings)
        main_db, audit_db, sequencer_db = databases.main, databases.audit, databases.sequencer
        redis = open_redis(settings.redis_url, settings.redis.max_connections)
        queue = RedisJobQueue(
            redis,
            request_timeout_s=settings.queue.request_timeout_s,
            worker_ttl_s=settings.queue.worker_ttl_s,
        )
        await queue.start()
        # Talks to identity providers only: no redirects, short timeouts, no proxy from the env.
        idp_client = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, connect=5.0), follow_redirects=False, trust_env=False
        )
        providers = [IdentityProvider(i, idp_client, settings.oidc) for i in settings.oidc.issuers]
        app.state.databases = databases
        app.state.redis = redis
        row_changes = change_feed_for(settings.database_url, enabled=settings.database.cache_rows)
        app.state.row_changes = row_changes
        app.state.sessions = create_session_factory(main_db, after_write_commit=row_changes.changed)
        app.state.authenticator = Authenticator(
            app.state.sessions,
            providers,
            create_tenants=settings.oidc.create_tenants,
            key_cache=RowCache(row_changes),
        )
        pseudonym_key = await asyncio.to_thread(
            load_or_create_pseudonym_key, settings.pseudonym_key_path
        )
        audit_writer = PendingWriter(audit_db)
        await audit_writer.start()
        app.state.audit = AuditLog(audit_writer, pseudonym_key)
        custody = OutcomeCustody(
            redis, app.state.audit, queue.gateway_id, alive_ttl_s=settings.queue.gateway_ttl_s
        )
        await custody.beat()  # alive before the first request registers
        stop_custody = asyncio.Event()
        custody_task = asyncio.create_task(custody.run(stop_custody), name="enclave-custody")
        metrics_export = MetricsExport("gateway")
        metrics = GatewayMetrics(metrics_export.meter)
        master_key = await asyncio.to_thread(load_or_create_master_key, settings.content_key_path)
        vault = ContentVault(audit_db, main_db, master_key, settings.audit.content_retention_days)
        quotas = Quotas(
            Admission(redis, lease_ttl_s=settings.quota.lease_ttl_s),
            app.state.sessions,
            settings.quota,
            RowCache(row_changes),
        )
        app.state.inference = InferenceService(
            queue,
            app.state.audit,
            vault,
            quotas,
            start_timeout_s=settings.queue.start_timeout_s,
            max_queued_per_tenant=settings.queue.max_queued_per_tenant,
            scheduling=settings.queue.scheduling,
            tracer=telemetry.tracer_of(provider),
            metrics=metrics,
            custody=custody,
        )
        app.state.gate = Gate(
            app.state.inference,
            app.state.authenticator,
            settings.http.max_body_bytes,
            settings.ollama.aliases,
        )
        app.state.console = ConsoleServices(
            app.state.inference,
            app.state.authenticator,
            SessionStore(redis, settings.console),
            app.state.sessions,
        )
        app.state.compliance = Compliance(
            log=app.state.audit,
            engine=audit_db,
            origin=settings.audit.origin,
            vault=vault,
            signer=signer,
            verifier=verifier,
            checkpoint_dir=settings.audit.checkpoint_dir,
        )
        stop_audit = asyncio.Event()
        audit_tasks = start_background_tasks(
            settings, sequencer_db, vault, quotas, signer, stop_audit
        )
        row_changes_task = asyncio.create_task(row_changes.run(stop_audit))
        app.state.readiness = Readiness(app.state.databases, redis, audit_tasks[0])

        async def metrics_text() -> bytes:
            await metrics.sample(redis, audit_db)
            return metrics_export.render()

        management = ManagementServer(
            settings.http.host,
            settings.http.management_port,
            readiness=app.state.readiness,
            metrics=metrics_text,
        )
        if settings.http.management_port:
            await management.start()
        try:
            yield
        finally:
            await shutdown_step("management server", management.stop())
            stop_custody.set()  # requests have ended: what is left in the registry is swept
            await shutdown_step("custody sweep", custody_task)
            await shutdown_step("audit writer", audit_writer.stop())
            stop_audit.set()
            await shutdown_step("audit tasks", asyncio.gather(*audit_tasks))
            await shutdown_step("row change feed", row_changes_task)
            await shutdown_step("queue", queue.stop())
            await idp_client.aclose()
            await redis.aclose()
            await shutdown_step("databases", databases.dispose())
            if provider is not None and own_provider:
                provider.shutdown()  # sends the spans still batched
            metrics_export.shutdown()

    def provide_http_settings() -> HttpSettings:
        return settings.http

    def provide_oidc_settings() -> OidcSettings:
        return settings.oidc

    def provide_ollama_settings() -> OllamaSettings:
        return settings.ollama

    def provide_console_settings() -> ConsoleSettings:
        return settings.console

    return Litestar(
        route_handlers=[
            ChatCompletionsController,
            CompletionsController,
            ModelsController,
            HealthController,
            PersonalKeysController,
            AuditKeyController,
            ComplianceController,
            SubjectsController,
            AdminTenantsController,
            AdminUsersController,
            AdminKeysController,
            AdminLimitsController,
            OllamaGenerationController,
            OllamaModelsController,
            EmbeddingsController,
            OllamaEmbedController,
            console_router(settings.oidc),
        ],
        lifespan=[lifespan],
        logging_config=None,  # logging is the process's: gateway/logs.py (JSON lines)
        plugins=[tracing_plugin(provider)] if provider is not None else [],
        dependencies={
            "gate": Provide(provide_gate, sync_to_thread=False),
            "inference": Provide(provide_inference, sync_to_thread=False),
            "authenticator": Provide(provide_authenticator, sync_to_thread=False),
            "databases": Provide(provide_databases, sync_to_thread=False),
            "redis": Provide(provide_redis, sync_to_thread=False),
            "readiness": Provide(provide_readiness, sync_to_thread=False),
            "http_settings": Provide(provide_http_settings, sync_to_thread=False),
            "oidc_settings": Provide(provide_oidc_settings, sync_to_thread=False),
            "ollama_settings": Provide(provide_ollama_settings, sync_to_thread=False),
            "sessions": Provide(provide_sessions, sync_to_thread=False),
            "checkpoint_key": Provide(provide_checkpoint_key, sync_to_thread=False),
            "compliance": Provide(provide_compliance, sync_to_thread=False),
            "console": Provide(provide_console, sync_to_thread=False),
            "console_settings": Provide(provide_console_settings, sync_to_thread=False),
        },
        exception_handlers={Exception: handle_exception},
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=openapi_config(),
        template_config=template_config(),
    )
