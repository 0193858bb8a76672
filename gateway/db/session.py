"""The async engine and session factory: SQLite tuned for one host, PostgreSQL pooled."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.pool import ConnectionPoolEntry

POSTGRES_POOL_SIZE = 10
POSTGRES_MAX_OVERFLOW = 10
SQLITE_BUSY_TIMEOUT_MS = 5000


def is_sqlite(url: str | URL) -> bool:
    """True for any SQLite URL (``sqlite://``, ``sqlite+aiosqlite://``)."""
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_directory(url: str | URL) -> None:
    """Create the directory (0700) of a file SQLite database, and the empty database file
    itself readable by its owner only (0600): it holds key hashes and the audit log, and
    SQLite would create it world-readable. Its -wal and -shm files take the same mode."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _set_sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes a second writer wait
    # instead of failing at once; SQLite leaves foreign keys off unless asked, per connection.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Build the app's async engine for an ``sqlite+aiosqlite`` or ``postgresql+asyncpg`` URL."""
    if is_sqlite(url):
        ensure_sqlite_directory(url)
        engine = _create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
        return engine
    return _create_async_engine(
        url,
        echo=echo,
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=POSTGRES_MAX_OVERFLOW,
        pool_pre_ping=True,
    )


_WROTE = "enclave.wrote"


def create_session_factory(
    engine: AsyncEngine, *, after_write_commit: Callable[[], None] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (no lazy reload in async code).

    ``after_write_commit`` is called once a session that wrote (an ORM flush or any
    statement other than a SELECT) has committed: the gateway drops its own row caches
    there, so its next request sees what it has just written without waiting for
    PostgreSQL's notification to come back (``gateway.db.changes``).
    """
    if after_write_commit is None:
        return async_sessionmaker(engine, expire_on_commit=False)
    told = after_write_commit
    session_class: type[Session] = type("WriteTellingSession", (Session,), {})

    def flushed(session: Session, _context: object) -> None:
        session.info[_WROTE] = True

    def executed(state: ORMExecuteState) -> None:
        if not state.is_select:
            state.session.info[_WROTE] = True

    def committed(session: Session) -> None:
        if session.info.pop(_WROTE, False):
            told()

    def rolled_back(session: Session, _transaction: SessionTransaction | None = None) -> None:
        session.info.pop(_WROTE, None)

    event.listen(session_class, "after_flush", flushed)
    event.listen(session_class, "do_orm_execute", executed)
    event.listen(session_class, "after_commit", committed)
    event.listen(session_class, "after_rollback", rolled_back)
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=session_class)


def upsert_insert(dialect: str, table: Any) -> Any:
    """``INSERT`` into ``table`` with ``on_conflict_do_nothing``/``_do_update``, in the
    form of the dialect (PostgreSQL or SQLite, the two Enclave runs on)."""
    module: Any = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)
