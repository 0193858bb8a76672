"""GET /healthz (the process is alive) and /readyz (database, audit store and Redis reachable)."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app_state import Databases


class HealthController(Controller):
    @get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz(
        self, databases: NamedDependency[Databases], redis: NamedDependency[Redis]
    ) -> Response[dict[str, str]]:
        checks: dict[str, str] = {}
        checks["database"] = await _check_db(databases.main)
        checks["audit"] = await _check_db(databases.audit)
        try:
            await redis.ping()
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "unreachable"
        is_ready = all(v == "ok" for v in checks.values())
        return Response(
            checks | {"status": "ready" if is_ready else "not ready"},
            status_code=200 if is_ready else 503,
        )


async def _check_db(engine: AsyncEngine) -> str:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return "ok"
    except Exception:
        return "unreachable"
