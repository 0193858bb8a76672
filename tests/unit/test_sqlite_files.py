"""The single-host SQLite database is private: its directory 0700, the database and its
WAL files 0600 (SQLite alone would create them world-readable)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from sqlalchemy import text

from gateway.db.session import create_engine, ensure_sqlite_directory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "enclave.db"
    url = f"sqlite+aiosqlite:///{path}"

    async def write() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE t (x INTEGER)"))
                await conn.execute(text("INSERT INTO t VALUES (1)"))
                assert mode(path.with_name("enclave.db-wal")) == 0o600
        finally:
            await engine.dispose()

    asyncio.run(write())
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600


def test_an_existing_database_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "enclave.db"
    path.write_bytes(b"")
    path.chmod(0o640)
    ensure_sqlite_directory(f"sqlite+aiosqlite:///{path}")
    assert mode(path) == 0o640
