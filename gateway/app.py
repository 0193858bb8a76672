"""create_app(settings) -> Litestar: the only wiring point."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from redis.asyncio import Redis

from gateway.api.chat_completions import ChatCompletionsController
from gateway.api.completions import CompletionsController
from gateway.api.health import HealthController
from gateway.api.models import ModelsController
from gateway.app_state import Databases
from gateway.audit.records import AuditLog
from gateway.auth.api_keys import ApiKeyAuthenticator
from gateway.db.session import create_engine, create_session_factory
from gateway.errors import handle_exception
from gateway.inference import InferenceService
from gateway.queue.client import RedisJobQueue
from gateway.settings import HttpSettings, Settings


def provide_inference(state: State) -> InferenceService:
    service: InferenceService = state.inference
    return service


def provide_authenticator(state: State) -> ApiKeyAuthenticator:
    authenticator: ApiKeyAuthenticator = state.authenticator
    return authenticator


def provide_databases(state: State) -> Databases:
    databases: Databases = state.databases
    return databases


def provide_redis(state: State) -> Redis:
    redis: Redis = state.redis
    return redis


def create_app(settings: Settings) -> Litestar:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        main_db = create_engine(settings.database_url)
        audit_db = (
            main_db
            if settings.audit_database_url == settings.database_url
            else create_engine(settings.audit_database_url)
        )
        redis = Redis.from_url(settings.redis_url, health_check_interval=30)
        queue = RedisJobQueue(
            redis,
            request_timeout_s=settings.queue.request_timeout_s,
            worker_ttl_s=settings.queue.worker_ttl_s,
        )
        await queue.start()
        app.state.databases = Databases(main=main_db, audit=audit_db)
        app.state.redis = redis
        app.state.authenticator = ApiKeyAuthenticator(create_session_factory(main_db))
        app.state.inference = InferenceService(queue, AuditLog(create_session_factory(audit_db)))
        try:
            yield
        finally:
            await queue.stop()
            await redis.aclose()
            await main_db.dispose()
            if audit_db is not main_db:
                await audit_db.dispose()

    def provide_http_settings() -> HttpSettings:
        return settings.http

    return Litestar(
        route_handlers=[
            ChatCompletionsController,
            CompletionsController,
            ModelsController,
            HealthController,
        ],
        lifespan=[lifespan],
        dependencies={
            "inference": Provide(provide_inference, sync_to_thread=False),
            "authenticator": Provide(provide_authenticator, sync_to_thread=False),
            "databases": Provide(provide_databases, sync_to_thread=False),
            "redis": Provide(provide_redis, sync_to_thread=False),
            "http_settings": Provide(provide_http_settings, sync_to_thread=False),
        },
        exception_handlers={Exception: handle_exception},
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=None,
    )
