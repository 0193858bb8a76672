"""Least-privilege roles (migration 0007) on real PostgreSQL: each group role can do its job
and nothing more, connecting as per-test LOGIN members; the whole app runs least-privileged."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import func, insert, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.checkpointer import write_checkpoint
from gateway.audit.checkpoints import Signer, generate_signer, load_signer
from gateway.audit.purge import purge_expired
from gateway.audit.sequencer import sequence_batch
from gateway.audit.writer import PendingWriter, append_pending
from gateway.db.migrate import build_config, upgrade_to_head
from gateway.db.models import AuditCheckpoint, AuditLogEntry, AuditNode, AuditPending
from gateway.db.session import create_engine
from gateway.settings import AuditSettings
from tests.conftest import admin_connection
from tests.fakes.engine import FakeEngine
from tests.integration.stack import open_stack

pytestmark = pytest.mark.integration

GATEWAY, SEQUENCER, AUDITOR = "enclave_gateway", "enclave_sequencer", "enclave_auditor"
ORIGIN = "enclave.test/roles"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
INSUFFICIENT_PRIVILEGE = "42501"

# table -> a column to UPDATE in place (a no-op change still needs the privilege)
AUDIT_TABLES = {
    "audit_pending": "id",
    "audit_log": "seq",
    "audit_index": "seq",
    "audit_nodes": "height",
    "audit_tree": "id",
    "audit_checkpoints": "size",
}
APP_TABLES = ("tenants", "users", "api_keys", "limits")
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
READ = {"SELECT"}
# role -> table -> the privileges it must hold; every other one must be absent
EXPECTED: dict[str, dict[str, set[str]]] = {
    GATEWAY: {
        **{t: {"SELECT", "INSERT", "UPDATE", "DELETE"} for t in APP_TABLES},
        "alembic_version": READ,
        **{t: READ for t in AUDIT_TABLES},
        "audit_pending": {"INSERT"},
        # content keys: created, shredded (UPDATE to NULL); legal holds applied and lifted
        "audit_subject_keys": {"SELECT", "INSERT", "UPDATE"},
        "audit_holds": {"SELECT", "INSERT", "DELETE"},
    },
    SEQUENCER: {
        "audit_pending": {"SELECT", "DELETE"},
        "audit_log": {"SELECT", "INSERT"},
        "audit_index": {"SELECT", "INSERT", "UPDATE", "DELETE"},  # purges drop index rows
        "audit_nodes": {"SELECT", "INSERT", "UPDATE"},
        "audit_holds": {"SELECT"},  # purges keep held subjects' records
        "audit_tree": {"SELECT", "UPDATE"},
        "audit_checkpoints": {"SELECT", "INSERT"},
    },
    AUDITOR: {t: READ for t in (*AUDIT_TABLES, "audit_subject_keys", "audit_holds")},
}

ConnectAs = Callable[[str], Awaitable[AsyncEngine]]


@pytest.fixture
def make_login_role(postgres_url: str) -> Iterator[Callable[[str, str], str]]:
    """Factory: a new LOGIN role, member of ``group``, as a URL of ``database_url``; its
    membership is revoked and the role dropped afterwards."""
    created: list[tuple[str, str]] = []

    def make(group: str, database_url: str) -> str:
        name = f"{group}_test_{uuid.uuid4().hex[:12]}"
        password = uuid.uuid4().hex  # unused under trust auth, needed under any other
        with admin_connection(postgres_url) as conn:
            conn.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
            created.append((name, group))
            conn.execute(f'GRANT {group} TO "{name}"')
        url = make_url(database_url).set(username=name, password=password)
        return url.render_as_string(hide_password=False)

    try:
        yield make
    finally:
        with admin_connection(postgres_url) as conn:
            for name, group in created:
                conn.execute(f'REVOKE {group} FROM "{name}"')
                conn.execute(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture
async def database(make_postgres_url: Callable[[], str]) -> str:
    """A fresh database at head, migrated by its owner (the superuser)."""
    url = make_postgres_url()
    await asyncio.to_thread(upgrade_to_head, url)
    return url


@pytest.fixture
async def owner(database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connect_as(
    database: str, make_login_role: Callable[[str, str], str]
) -> AsyncIterator[ConnectAs]:
    """Factory: an engine on ``database`` logged in as a new member of a group role."""
    engines: list[AsyncEngine] = []

    async def connect(group: str) -> AsyncEngine:
        engines.append(create_engine(make_login_role(group, database)))
        return engines[-1]

    yield connect
    for engine in engines:
        await engine.dispose()


async def seed(owner: AsyncEngine) -> None:
    """At least one row in every audit table: a sequenced record (log, index, tree), one
    still pending, a stored node and a checkpoint."""
    async with owner.begin() as conn:
        await append_pending(conn, {"event": "accepted", "n": 1})
    assert await sequence_batch(owner) == 1
    async with owner.begin() as conn:
        await append_pending(conn, {"event": "accepted", "n": 2})
        await conn.execute(insert(AuditNode).values(height=8, idx=0, hash=bytes(32)))
        await conn.execute(
            insert(AuditCheckpoint).values(
                size=1, root=bytes(32), note="test", created_at=datetime.now(UTC)
            )
        )


async def write_pending(engine: AsyncEngine, count: int) -> None:
    """Queue records as the app does (group commit, COPY on PostgreSQL)."""
    writer = PendingWriter(engine)
    await writer.start()
    try:
        await asyncio.gather(*(writer.append({"event": "accepted", "n": n}) for n in range(count)))
    finally:
        await writer.stop()


async def row_count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


async def refusal(engine: AsyncEngine, statement: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as caught:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    return caught.value


def assert_permission_denied(error: DBAPIError) -> None:
    """Refused by a missing privilege: SQLSTATE 42501, and not by a trigger (whose message
    differs) nor by any other failure."""
    assert getattr(error.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE, error
    assert "permission denied" in str(error.orig), error


async def privileges(engine: AsyncEngine, role: str) -> dict[str, set[str]]:
    """Every privilege ``role`` holds on each table of the schema (none: left out)."""
    held: dict[str, set[str]] = {}
    async with engine.connect() as conn:
        tables = await conn.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        )
        for table in list(tables):
            for privilege in PRIVILEGES:
                if await conn.scalar(
                    text("SELECT has_table_privilege(:role, :table, :privilege)"),
                    {"role": role, "table": table, "privilege": privilege},
                ):
                    held.setdefault(table, set()).add(privilege)
    return held


async def test_each_role_holds_exactly_its_grants(owner: AsyncEngine) -> None:
    for role, expected in EXPECTED.items():
        assert await privileges(owner, role) == expected, role
    async with owner.connect() as conn:
        can_use_ids = await conn.scalar(
            text("SELECT has_sequence_privilege(:role, 'audit_pending_id_seq', 'USAGE')"),
            {"role": GATEWAY},
        )
    assert can_use_ids is True


async def test_only_the_sequencer_may_purge_record_bytes(owner: AsyncEngine) -> None:
    """UPDATE on audit_log is granted for one column, data (purges set it to NULL)."""
    held = {}
    async with owner.connect() as conn:
        for role in EXPECTED:
            for column in ("data", "leaf", "seq"):
                held[role, column] = await conn.scalar(
                    text("SELECT has_column_privilege(:role, 'audit_log', :column, 'UPDATE')"),
                    {"role": role, "column": column},
                )
    assert {key for key, allowed in held.items() if allowed} == {(SEQUENCER, "data")}


async def test_the_gateway_queues_records(owner: AsyncEngine, connect_as: ConnectAs) -> None:
    gateway = await connect_as(GATEWAY)

    await write_pending(gateway, 2)

    assert await row_count(owner, "audit_pending") == 2


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "TRUNCATE"])
@pytest.mark.parametrize("table", list(AUDIT_TABLES))
async def test_the_gateway_may_not_change_audit_tables(
    owner: AsyncEngine, connect_as: ConnectAs, table: str, operation: str
) -> None:
    await seed(owner)
    before = await row_count(owner, table)
    assert before > 0
    gateway = await connect_as(GATEWAY)
    statement = {
        "UPDATE": f"UPDATE {table} SET {AUDIT_TABLES[table]} = {AUDIT_TABLES[table]}",
        "DELETE": f"DELETE FROM {table}",
        "TRUNCATE": f"TRUNCATE {table}",
    }[operation]

    assert_permission_denied(await refusal(gateway, statement))
    assert await row_count(owner, table) == before


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO audit_log (seq, data, leaf, sequenced_at) VALUES (99, '', '', now())",
        "SELECT body FROM audit_pending",
    ],
)
async def test_the_gateway_may_neither_write_the_log_nor_read_pending_records(
    owner: AsyncEngine, connect_as: ConnectAs, statement: str
) -> None:
    await seed(owner)
    gateway = await connect_as(GATEWAY)

    assert_permission_denied(await refusal(gateway, statement))
    assert await row_count(owner, "audit_log") == 1


async def test_the_auditor_reads_the_log_and_nothing_else(
    owner: AsyncEngine, connect_as: ConnectAs
) -> None:
    await seed(owner)
    auditor = await connect_as(AUDITOR)

    async with auditor.connect() as conn:
        data = list(await conn.scalars(select(AuditLogEntry.data)))
    assert [json.loads(d)["fields"]["n"] for d in data] == [1]
    assert_permission_denied(
        await refusal(
            auditor, "INSERT INTO audit_pending (created_at, body) VALUES (now(), '\\x7b7d')"
        )
    )
    assert_permission_denied(await refusal(auditor, "SELECT * FROM api_keys"))
    assert await row_count(owner, "audit_pending") == 1


async def test_the_sequencer_sequences_and_checkpoints(
    owner: AsyncEngine, connect_as: ConnectAs, tmp_path: Path
) -> None:
    gateway, sequencer = await connect_as(GATEWAY), await connect_as(SEQUENCER)
    await write_pending(gateway, 3)

    assert await sequence_batch(sequencer) == 3
    checkpoint = await write_checkpoint(sequencer, signer(tmp_path), ORIGIN)

    assert await row_count(owner, "audit_pending") == 0
    assert await row_count(owner, "audit_log") == 3
    assert checkpoint is not None
    assert checkpoint.size == 3
    assert await row_count(owner, "audit_checkpoints") == 1


async def test_the_sequencer_purges_and_the_gateway_may_not(
    owner: AsyncEngine, connect_as: ConnectAs
) -> None:
    gateway, sequencer = await connect_as(GATEWAY), await connect_as(SEQUENCER)
    await write_pending(gateway, 3)
    await sequence_batch(sequencer)
    years_later = datetime.now(UTC) + timedelta(days=7 * 365)

    with pytest.raises(DBAPIError) as refused:
        await purge_expired(gateway, owner, 6 * 365, now=years_later)
    assert getattr(refused.value.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE
    assert await purge_expired(sequencer, owner, 6 * 365, now=years_later) == 3

    async with owner.connect() as conn:
        kept = await conn.scalar(select(func.count()).where(AuditLogEntry.data.is_not(None)))
    assert kept == 0


async def test_even_the_owner_may_not_truncate_pending_records(owner: AsyncEngine) -> None:
    await seed(owner)

    error = await refusal(owner, "TRUNCATE audit_pending")

    assert getattr(error.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE
    assert "not allowed" in str(error.orig)  # the trigger's refusal
    assert await row_count(owner, "audit_pending") == 1


async def test_the_app_runs_least_privileged(
    database: str,
    make_login_role: Callable[[str, str], str],
    owner: AsyncEngine,
    redis_url: str,
    redis_client: Redis,
    tmp_path: Path,
) -> None:
    audit = AuditSettings(
        sequencer_database_url=SecretStr(make_login_role(SEQUENCER, database)),
        origin=ORIGIN,
        signing_key_file=signing_key_file(tmp_path),
        checkpoint_interval_s=0.2,
        pseudonym_key_file=tmp_path / "pseudonym.key",
    )
    gateway_url = make_login_role(GATEWAY, database)

    async with open_stack(gateway_url, redis_url, FakeEngine(), audit=audit) as stack:
        key = await stack.key(tenant="cardiology", user="dr-house")
        response = await stack.client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200
        events = await wait_until_sequenced_and_signed(owner, 2)

    assert sorted(events) == ["accepted", "outcome"]


async def wait_until_sequenced_and_signed(owner: AsyncEngine, count: int) -> list[str]:
    """Poll (bounded) until ``count`` records are in the log, none pending, and a checkpoint
    covers them; the logged records' events."""
    deadline = time.monotonic() + 20
    while True:
        async with owner.connect() as conn:
            data = list(await conn.scalars(select(AuditLogEntry.data)))
            pending = await conn.scalar(select(func.count()).select_from(AuditPending))
            signed = await conn.scalar(select(func.max(AuditCheckpoint.size)))
        if len(data) >= count and pending == 0 and (signed or 0) >= len(data):
            return [json.loads(d)["fields"]["event"] for d in data]
        assert time.monotonic() < deadline, f"{len(data)} logged, {pending} pending, {signed}"
        await asyncio.sleep(0.1)


async def test_the_migration_runs_on_two_databases_of_one_cluster(
    make_postgres_url: Callable[[], str],
) -> None:
    urls = [make_postgres_url(), make_postgres_url()]
    for url in urls:  # the second finds the roles already there
        await asyncio.to_thread(upgrade_to_head, url)

    for url in urls:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(
                    text("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN (:g, :s, :a)"),
                    {"g": GATEWAY, "s": SEQUENCER, "a": AUDITOR},
                )
                roles = {name: can_login for name, can_login in result}
            assert roles == {GATEWAY: False, SEQUENCER: False, AUDITOR: False}
            assert await privileges(engine, GATEWAY) == EXPECTED[GATEWAY]
        finally:
            await engine.dispose()


async def test_downgrade_revokes_the_grants_and_keeps_the_roles(
    database: str, owner: AsyncEngine
) -> None:
    await asyncio.to_thread(command.downgrade, build_config(database), "0006")

    for role in EXPECTED:
        assert await privileges(owner, role) == {}, role
    async with owner.begin() as conn:  # the pending TRUNCATE trigger is gone too
        await append_pending(conn, {"event": "accepted"})
        await conn.execute(text("TRUNCATE audit_pending"))
        roles = await conn.scalar(
            text("SELECT count(*) FROM pg_roles WHERE rolname IN (:g, :s, :a)"),
            {"g": GATEWAY, "s": SEQUENCER, "a": AUDITOR},
        )
    assert roles == 3

    await asyncio.to_thread(upgrade_to_head, database)
    assert await privileges(owner, SEQUENCER) == EXPECTED[SEQUENCER]


def signing_key_file(directory: Path) -> Path:
    private, _ = generate_signer(ORIGIN)
    path = directory / "audit.key"
    path.write_text(private)
    path.chmod(0o600)
    return path


def signer(directory: Path) -> Signer:
    return load_signer(signing_key_file(directory))
