"""Migrations build the models' schema on SQLite and PostgreSQL, and drift is caught."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from gateway.db.migrate import SchemaDriftError, build_config, check_drift, upgrade_to_head
from gateway.db.models import ApiKey, AuditIndex, Tenant, User
from gateway.db.session import create_engine, create_session_factory
from tests.processes import free_port

pytestmark = pytest.mark.integration

MODEL_TABLES = {
    "tenants",
    "users",
    "api_keys",
    "audit_index",
    "audit_nodes",
    "audit_pending",
    "audit_log",
    "audit_tree",
    "audit_checkpoints",
    "audit_subject_keys",
    "audit_holds",
    "limits",
}
BERLIN_SUMMER = timezone(timedelta(hours=2))


async def migrate(url: str) -> None:
    # env.py runs its own event loop, so Alembic must not share this one's thread.
    await asyncio.to_thread(upgrade_to_head, url)


async def check(url: str) -> None:
    await asyncio.to_thread(check_drift, url)


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def execute(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def test_upgrade_to_head_creates_the_models_schema_without_drift(database_url: str) -> None:
    await migrate(database_url)

    assert await table_names(database_url) == MODEL_TABLES | {"alembic_version"}
    await check(database_url)  # raises SchemaDriftError on any difference


async def test_upgrade_to_head_twice_is_a_no_op(database_url: str) -> None:
    await migrate(database_url)
    await migrate(database_url)

    await check(database_url)


async def test_check_drift_rejects_a_database_never_migrated(database_url: str) -> None:
    with pytest.raises(SchemaDriftError, match="not up to date"):
        await check(database_url)


async def test_check_drift_detects_a_dropped_column(database_url: str) -> None:
    await migrate(database_url)
    await execute(database_url, "ALTER TABLE audit_index DROP COLUMN endpoint")

    with pytest.raises(SchemaDriftError, match="endpoint"):
        await check(database_url)


async def test_check_drift_detects_a_table_the_models_do_not_know(database_url: str) -> None:
    await migrate(database_url)
    await execute(database_url, "CREATE TABLE stray (id INTEGER PRIMARY KEY)")

    with pytest.raises(SchemaDriftError, match="stray"):
        await check(database_url)


async def test_downgrade_to_base_then_upgrade_again(database_url: str) -> None:
    await migrate(database_url)
    await asyncio.to_thread(command.downgrade, build_config(database_url), "base")
    assert await table_names(database_url) == {"alembic_version"}

    await migrate(database_url)
    assert await table_names(database_url) == MODEL_TABLES | {"alembic_version"}


async def test_rows_round_trip_with_utc_datetimes(database_url: str) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    created = datetime(2025, 6, 1, 12, 30, 15, 123456, tzinfo=BERLIN_SUMMER)
    try:
        async with sessions() as session, session.begin():
            session.add(Tenant(id="t-1", name="radiology", created_at=created))
            await session.flush()
            session.add(User(id="u-1", tenant_id="t-1", name="ada", created_at=created))
            await session.flush()
            session.add_all([
                ApiKey(
                    id="k-1", prefix="ek_abc", secret_sha256="0" * 64, tenant_id="t-1",
                    user_id="u-1", name="ci", created_at=created,
                    expires_at=created + timedelta(days=30),
                ),
                AuditIndex(
                    seq=0, time=created, request_id="req-1", event="accepted", tenant_id="t-1",
                    user="p" * 64, endpoint="/v1/chat/completions", status=200,
                ),
            ])  # fmt: skip

        async with sessions() as session:
            key = (await session.execute(select(ApiKey))).scalar_one()
            record = (await session.execute(select(AuditIndex))).scalar_one()
            user = await session.get(User, "u-1")

        assert user is not None
        assert user.is_disabled is False
        assert key.created_at == created
        assert key.created_at.tzinfo is UTC
        assert key.created_at.hour == 10  # 12:30 at +02:00 is 10:30 UTC
        assert key.expires_at == created + timedelta(days=30)
        assert key.revoked_at is None
        assert record.time == created
        assert record.time.tzinfo is UTC
        assert record.seq == 0
    finally:
        await engine.dispose()


async def test_foreign_keys_are_enforced(database_url: str) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    try:
        with pytest.raises(IntegrityError):
            async with sessions() as session, session.begin():
                session.add(
                    User(id="u-1", tenant_id="missing", name="x", created_at=datetime.now(UTC))
                )
    finally:
        await engine.dispose()


async def test_naive_datetimes_are_refused(sqlite_url: str) -> None:
    await migrate(sqlite_url)
    engine = create_engine(sqlite_url)
    sessions = create_session_factory(engine)
    try:
        with pytest.raises(StatementError, match="naive datetime"):
            async with sessions() as session, session.begin():
                session.add(Tenant(id="t-1", name="x", created_at=datetime(2025, 1, 1)))
    finally:
        await engine.dispose()


async def test_sqlite_engine_uses_wal_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.execute(text(f"PRAGMA {name}"))).scalar_one()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
    finally:
        await engine.dispose()

    assert pragmas == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1}


def test_migrate_waits_for_the_database_then_fails_loudly(tmp_path: Path) -> None:
    """What the Helm hook and the compose service run: an unreachable database is a
    non-zero exit with one clear line, after the wait, and no password in it."""
    port = free_port()  # nothing listens there
    env = {
        **os.environ,
        "ENCLAVE_DATABASE__URL": f"postgresql+asyncpg://enclave:s3cret-pw@127.0.0.1:{port}/x",
        "ENCLAVE_STATE_DIR": str(tmp_path),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "migrate", "--wait", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    waited = time.monotonic() - started
    assert result.returncode == 1
    assert "enclave migrate: database unreachable after 2 s:" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert waited >= 2


def test_migrate_with_a_wait_migrates_a_reachable_database(
    make_postgres_url: Callable[[], str],
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "migrate", "--wait", "30"],
        env={**os.environ, "ENCLAVE_DATABASE__URL": make_postgres_url()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "database is at the newest revision" in result.stdout
