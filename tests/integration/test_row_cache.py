"""Cached key, user, tenant and limit rows on real PostgreSQL: a change committed elsewhere
(another connection, as the CLI or another replica would) reaches the gateway by NOTIFY and
applies to every request after it arrived (milliseconds after the commit); the cache never
lets a wrong secret through, and without its listener it reads through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.auth.api_keys import revoke_key
from gateway.db.changes import CHANNEL, PostgresChangeFeed
from gateway.db.models import Limit, Tenant, User
from gateway.db.session import create_session_factory
from tests.faults.load import poll
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def elsewhere(stack: Stack) -> async_sessionmaker[AsyncSession]:
    """Sessions of another process (the CLI, another replica, psql): the app hears of their
    writes only by PostgreSQL's notification. (The stack's own sessions tell the app at
    once, as the app's own writes do.)"""
    return create_session_factory(stack.db)


def feed_of(stack: Stack) -> PostgresChangeFeed:
    feed = stack.app.state.row_changes
    assert isinstance(feed, PostgresChangeFeed)
    return feed


async def chat(stack: Stack, key: str) -> Any:
    return await stack.client.post(
        "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
    )


async def warm(stack: Stack, key: str) -> None:
    """Accepted requests until one is served from the cache (the notifications of the key's
    own creation may arrive after the first read, which is then not kept)."""
    await poll(lambda: feed_of(stack).live, timeout_s=10, what="the change feed")
    cache = stack.app.state.authenticator.api_keys._cache

    async def served_from_cache() -> bool:
        hits = cache.hits
        assert (await chat(stack, key)).status_code == 200
        return bool(cache.hits > hits)

    await poll(served_from_cache, timeout_s=10, what="a request served from the cache")


async def committed_elsewhere(
    stack: Stack, change: Callable[[AsyncSession], Awaitable[object]]
) -> None:
    """Run ``change`` in a session of its own and commit, then wait for its notification."""
    feed = feed_of(stack)
    before = feed.generation
    async with elsewhere(stack)() as session:
        await change(session)
        await session.commit()
    await poll(lambda: feed.generation > before, timeout_s=5, what="the change's notification")


def refusal_reason(rows: list[Any]) -> str | None:
    return rows[-1].error_code if rows and rows[-1].event == "refused" else None


async def test_a_key_revoked_elsewhere_is_refused_on_the_next_request(stack: Stack) -> None:
    key = await stack.key()
    await warm(stack, key)
    await committed_elsewhere(stack, lambda session: revoke_key(session, key.split("_")[1]))
    response = await chat(stack, key)
    assert response.status_code == 401
    assert refusal_reason(await stack.audit_rows()) == "revoked_api_key"


@pytest.mark.parametrize("table", [User, Tenant])
async def test_a_user_or_tenant_disabled_elsewhere_is_refused_on_the_next_request(
    stack: Stack, table: type[User] | type[Tenant]
) -> None:
    key = await stack.key(tenant="radiology", user="bob")
    await warm(stack, key)
    name = "bob" if table is User else "radiology"
    await committed_elsewhere(
        stack,
        lambda session: session.execute(
            update(table).where(table.name == name).values(is_disabled=True)
        ),
    )
    assert (await chat(stack, key)).status_code == 401
    expected = "user_disabled" if table is User else "tenant_disabled"
    assert refusal_reason(await stack.audit_rows()) == expected


async def test_a_cached_prefix_with_another_secret_is_still_refused(stack: Stack) -> None:
    key = await stack.key()
    await warm(stack, key)
    forged = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    assert (await chat(stack, forged)).status_code == 401
    assert refusal_reason(await stack.audit_rows()) == "invalid_api_key"
    assert (await chat(stack, key)).status_code == 200


async def test_a_limit_set_elsewhere_applies_to_the_next_request(stack: Stack) -> None:
    key = await stack.key(tenant="oncology", user="carol")
    await warm(stack, key)

    async def limit_the_tenant(session: AsyncSession) -> None:
        tenant_id = await session.scalar(text("SELECT id FROM tenants WHERE name = 'oncology'"))
        session.add(
            Limit(kind="tenant", scope_id=tenant_id, tokens_per_minute=1, updated_at=utcnow())
        )

    await committed_elsewhere(stack, limit_the_tenant)
    response = await chat(stack, key)
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "request_exceeds_tokens_per_minute"


async def test_a_change_made_while_the_listener_was_away_is_not_hidden_by_the_cache(
    stack: Stack,
) -> None:
    """The listener's backend is killed and the key revoked at once: its notification may be
    lost, so the reconnected feed must not trust anything cached before."""
    key = await stack.key()
    await warm(stack, key)
    feed = feed_of(stack)
    async with elsewhere(stack)() as session:
        await session.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
            )
        )
        await session.commit()
        assert await revoke_key(session, key.split("_")[1])
    await poll(lambda: not feed.live, timeout_s=10, what="the feed to notice")
    await poll(lambda: feed.live, timeout_s=10, what="the feed to reconnect")
    assert (await chat(stack, key)).status_code == 401


async def test_the_feed_counts_writes_to_every_watched_table(stack: Stack) -> None:
    feed = feed_of(stack)
    await poll(lambda: feed.live, timeout_s=10, what="the change feed")
    for table in ("tenants", "users", "api_keys", "limits"):
        before = feed.generation
        async with elsewhere(stack)() as session:
            await session.execute(text(f"UPDATE {table} SET {_column(table)} WHERE false"))
            await session.commit()
        await poll(lambda b=before: feed.generation > b, timeout_s=5, what=f"a change to {table}")
    before = feed.generation
    async with elsewhere(stack)() as session:  # a read tells nothing; the marker after it does
        await session.execute(text("SELECT count(*) FROM api_keys"))
        await session.commit()
        await session.execute(text(f"NOTIFY {CHANNEL}"))
        await session.commit()
    await poll(lambda: feed.generation > before, timeout_s=5, what="the marker")
    assert feed.generation == before + 1


def _column(table: str) -> str:
    return {"limits": "updated_at = updated_at", "api_keys": "name = name"}.get(
        table, "name = name"
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
