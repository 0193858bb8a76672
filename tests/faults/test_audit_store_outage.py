"""The audit database stopped and started again under 50 concurrent streaming clients.

The audit store is a PostgreSQL cluster this test owns (``tests/faults/servers.py``); the
main database and Redis stay up. No audit record, no inference: requests arriving while it
is away get 503 ``audit_unavailable`` and never reach the engine. Requests accepted before
the outage that end during it still get their one outcome record, once the store is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis

from gateway.db.migrate import upgrade_to_head
from tests.audit_records import Logged
from tests.fakes.engine import FakeEngine
from tests.faults.conftest import StartLoad
from tests.faults.load import (
    envelope_faults,
    numbered_reply,
    outcome_faults,
    poll,
    stream_chat,
    text_faults,
)
from tests.faults.servers import RestartablePostgres
from tests.integration.stack import Stack, open_stack
from workers.engine import ChatPrompt

pytestmark = pytest.mark.integration

CLIENTS = 50
RECOVERY_BOUND_S = 5.0
HUNG_STORE_BOUND_S = 15.0


@pytest.fixture
def audit_server() -> Iterator[RestartablePostgres]:
    server = RestartablePostgres()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(reply=numbered_reply, step_delay_s=0.05, capacity=64, max_context=4096)


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    redis_client: Redis,
    audit_server: RestartablePostgres,
    engine: FakeEngine,
) -> AsyncIterator[Stack]:
    audit_url = audit_server.create_database("audit")
    await asyncio.to_thread(upgrade_to_head, audit_url)
    async with open_stack(make_postgres_url(), redis_url, engine, audit_url=audit_url) as opened:
        yield opened


def nonces_served(engine: FakeEngine) -> set[str]:
    return {
        prompt.messages[-1].content
        for _, prompt, _ in engine.requests
        if isinstance(prompt, ChatPrompt)
    }


async def test_audit_store_outage_refuses_new_requests_and_loses_no_outcome(
    stack: Stack, engine: FakeEngine, audit_server: RestartablePostgres, start_load: StartLoad
) -> None:
    key = await stack.key()
    load = start_load(stack.client, key, CLIENTS)
    await poll(lambda: engine.num_unfinished() >= 30, timeout_s=30, what="30 streams")

    await asyncio.to_thread(audit_server.stop)
    down_at = time.monotonic()
    refused = await asyncio.gather(*(stream_chat(stack.client, key) for _ in range(20)))
    # The outage lasts until streams accepted before it have ended during it.
    await poll(
        lambda: len([r for r in load.replies if r.sent_at < down_at < r.ended_at]) >= 30,
        timeout_s=30,
        what="30 streams accepted before the outage to end during it",
    )
    await asyncio.to_thread(audit_server.start)
    back_at = time.monotonic()
    recovery_s = await poll(
        lambda: any(r.is_complete for r in load.since(back_at)),
        timeout_s=30,
        what="a request sent after the restart to complete",
    )
    replies = await load.stop()
    print(
        f"{len(replies)} requests; served again {recovery_s:.2f} s after the audit store came "
        f"back; statuses {sorted(Counter(r.status for r in replies).items(), key=str)}"
    )

    assert [(r.status, r.error and r.error["code"]) for r in refused] == [
        (503, "audit_unavailable")
    ] * len(refused)
    assert max(r.ended_at - r.sent_at for r in refused) < 5.0
    assert nonces_served(engine).isdisjoint(r.nonce for r in refused)  # never reached it
    assert [r.failure for r in replies if r.failure] == []
    assert {r.status for r in replies} <= {200, 503}, Counter(r.status for r in replies)
    assert envelope_faults([*refused, *replies]) == []
    assert text_faults(replies) == []
    ended_in_outage = [r for r in replies if r.sent_at < down_at < r.ended_at]
    assert all(r.is_complete for r in ended_in_outage)
    assert recovery_s < RECOVERY_BOUND_S

    async def is_settled() -> bool:
        rows = await stack.audit_rows()
        return not outcome_faults(rows) and all(r.seq is not None for r in rows)

    with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
        await poll(is_settled, timeout_s=15, what="every outcome record, sequenced")
    rows = await stack.audit_rows()
    assert outcome_faults(rows) == []
    assert len([r for r in rows if r.seq is None]) == 0  # the sequencer came back too
    assert len(refusals_of_the_outage(rows)) >= len(refused)
    accepted = {r.request_id for r in rows if r.event == "accepted"}
    assert {request_id for request_id, _, _ in engine.requests} <= accepted
    assert {r.request_id for r in ended_in_outage} <= accepted


async def test_a_hung_audit_store_is_a_503_not_a_hang(
    stack: Stack, engine: FakeEngine, audit_server: RestartablePostgres
) -> None:
    """The store's processes stopped (SIGSTOP): connections stay open and nothing answers,
    as with a hung server or a network that drops packets."""
    key = await stack.key()
    assert (await stream_chat(stack.client, key)).is_complete  # pooled connections exist
    audit_server.freeze()
    try:
        refused = await asyncio.gather(
            *(stream_chat(stack.client, key, timeout_s=40) for _ in range(5))
        )
    finally:
        audit_server.thaw()
    assert [(r.status, r.error and r.error["code"]) for r in refused] == [
        (503, "audit_unavailable")
    ] * len(refused), [(r.status, r.failure) for r in refused]
    assert max(r.ended_at - r.sent_at for r in refused) < HUNG_STORE_BOUND_S
    assert nonces_served(engine).isdisjoint(r.nonce for r in refused)
    await poll(lambda: is_served(stack, key), timeout_s=10, what="a request served after the thaw")
    rows = await stack.audit_rows()
    assert outcome_faults(rows) == []
    assert len(refusals_of_the_outage(rows)) == len(refused)  # kept, then written


async def is_served(stack: Stack, key: str) -> bool:
    return (await stream_chat(stack.client, key, timeout_s=10)).is_complete


def refusals_of_the_outage(rows: list[Logged]) -> list[Logged]:
    return [r for r in rows if (r.event, r.error_code) == ("refused", "audit_unavailable")]
