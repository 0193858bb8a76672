"""Alembic environment: async engines (aiosqlite, asyncpg), models from gateway.db.models.

The URL comes from the config (``gateway.db.migrate`` sets it); run from the command line
without one, it falls back to the gateway settings (``ENCLAVE_DATABASE__URL``).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from gateway.db.models import Base
from gateway.db.models.base import UtcDateTime
from gateway.db.session import ensure_sqlite_directory
from gateway.settings import load_settings

config = context.config
target_metadata = Base.metadata

# Only the alembic command line passes an ini file; programmatic callers keep their logging.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """The configured URL, else the one the gateway itself would use."""
    return config.get_main_option("sqlalchemy.url") or load_settings().database_url


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render UtcDateTime as its plain column type, so revisions never import model code."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def configure_context(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        # Batch mode lets SQLite alter tables (copy and swap); on PostgreSQL it emits plain
        # ALTERs, so one revision serves both backends.
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: print the SQL instead of running it."""
    configure_context(url=database_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    configure_context(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    # A fresh SQLite connection has foreign keys off, which batch mode needs: with them on,
    # dropping a parent table while copying it would cascade deletes into its children.
    url = database_url()
    ensure_sqlite_directory(url)
    engine = async_engine_from_config(
        {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())
