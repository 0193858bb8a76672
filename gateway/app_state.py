"""App-scoped resources, built in the lifespan and handed to handlers by providers."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True)
class Databases:
    main: AsyncEngine
    audit: AsyncEngine
