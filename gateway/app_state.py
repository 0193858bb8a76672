"""App-scoped resources, built in the lifespan and handed to handlers by providers."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.session import create_engine
from gateway.settings import Settings


@dataclass(frozen=True)
class Databases:
    main: AsyncEngine
    audit: AsyncEngine
    sequencer: AsyncEngine
    """The in-process audit sequencer's connection (a role with enclave_sequencer)."""

    @classmethod
    def open(cls, settings: Settings) -> Databases:
        """One engine per distinct URL: the audit store and the sequencer share the main
        database's engine unless configured apart."""
        main = create_engine(settings.database_url)
        audit = (
            main
            if settings.audit_database_url == settings.database_url
            else create_engine(settings.audit_database_url)
        )
        sequencer = (
            audit
            if settings.sequencer_database_url == settings.audit_database_url
            else create_engine(settings.sequencer_database_url)
        )
        return cls(main, audit, sequencer)

    async def dispose(self) -> None:
        for engine in {id(e): e for e in (self.main, self.audit, self.sequencer)}.values():
            await engine.dispose()
