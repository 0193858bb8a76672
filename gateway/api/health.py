"""Health: ``/healthz`` (the process is alive) and ``/readyz`` (it can do its work).

A gateway is ready when its database, its audit store, Redis and the audit sequencer are
reachable: a gateway that cannot write audit records must not take requests. The same
checks answer on the API port and on the management listener (``gateway.management``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app_state import Databases
from gateway.management import verdict


@dataclass(frozen=True)
class Readiness:
    databases: Databases
    redis: Redis
    sequencer: asyncio.Task[None] | None
    """The in-process sequencer's task (None: not started, as in some tests)."""

    async def __call__(self) -> dict[str, str]:
        """Each check, "ok" or what is wrong."""
        checks = {
            "database": await _check_db(self.databases.main),
            "audit": await _check_db(self.databases.audit),
        }
        try:
            await self.redis.ping()
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "unreachable"
        if self.sequencer is not None and self.sequencer.done():
            checks["sequencer"] = "stopped"
        else:
            checks["sequencer"] = await _check_db(self.databases.sequencer)
        return checks


class HealthController(Controller):
    @get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz(self, readiness: NamedDependency[Readiness]) -> Response[dict[str, str]]:
        status, content = verdict(await readiness())
        return Response(content, status_code=status)


async def _check_db(engine: AsyncEngine) -> str:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return "ok"
    except Exception:
        return "unreachable"
