"""Custody of outcome records on real Redis and PostgreSQL: a dead gateway's accepted
requests get exactly one ``gateway_lost`` outcome each, from whichever gateway sweeps it.

A dead gateway here is what it leaves in Redis: a registry of accepted requests (written
by the real enqueue script) and a liveness key that is no longer renewed. Real gateway
processes killed with SIGKILL, or stopped with SIGSTOP, are in tests/faults/test_kills.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.records import AuditEntry, AuditLog
from gateway.audit.writer import PendingWriter
from gateway.custody import GATEWAY_LOST, OutcomeCustody, registry_value
from gateway.db.migrate import upgrade_to_head
from gateway.db.session import create_engine
from gateway.queue.protocol import (
    ChatMessage,
    Job,
    SamplingOptions,
    gateway_accepted_key,
    gateway_alive_key,
    gateway_fence_key,
    gateway_sweeping_key,
    gateways_key,
)
from gateway.queue.schedule import Scheduler
from tests.audit_records import Logged, read_logged

pytestmark = pytest.mark.integration

TTL_S = 0.5
PSEUDONYM_KEY = b"k" * 32


@pytest.fixture
async def audit_db(make_postgres_url: Callable[[], str]) -> AsyncIterator[AsyncEngine]:
    url = make_postgres_url()
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


@dataclass
class Gateway:
    """What one gateway process holds for custody: its audit log and its custody."""

    log: AuditLog
    custody: OutcomeCustody


@pytest.fixture
async def make_gateway(
    audit_db: AsyncEngine, redis_client: Redis
) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    """Factory: a gateway's audit writer and custody (not running: tests drive it)."""
    writers: list[PendingWriter] = []

    async def make(**kwargs: Any) -> Gateway:
        writer = PendingWriter(audit_db)
        await writer.start()
        writers.append(writer)
        log = AuditLog(writer, PSEUDONYM_KEY)
        custody = OutcomeCustody(
            redis_client, log, f"gw-{uuid.uuid4().hex[:8]}", alive_ttl_s=TTL_S, **kwargs
        )
        await custody.beat()
        return Gateway(log, custody)

    yield make
    for writer in writers:
        await writer.stop()


async def accept(gateway: Gateway, redis: Redis, count: int) -> list[str]:
    """Requests the gateway accepted (records committed) and enqueued with its registry."""
    scheduler = Scheduler(redis)
    ids = []
    for i in range(count):
        request_id = f"req-{uuid.uuid4().hex}"
        accepted = AuditEntry(
            request_id=request_id,
            event="accepted",
            endpoint="/v1/chat/completions",
            status=202,
            tenant_id="acme",
            user_id=f"user-{i % 3}",
            key_id=f"key-{i % 3}",
            model="fake-model",
            prompt_sha256=f"{i:064x}",
        )
        await gateway.log.append(accepted)
        job = Job(
            id=request_id,
            model="fake-model",
            kind="chat",
            reply_to="nowhere",
            tenant="acme",
            sampling=SamplingOptions(),
            enqueued_at=time.time(),
            messages=(ChatMessage("user", "hi"),),
        )
        registry = (gateway.custody.registry_key, registry_value(accepted))
        await scheduler.enqueue(job, registry)
        ids.append(request_id)
    return ids


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Poll a condition; the seconds it took."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def is_dead(redis: Redis, gateway: Gateway) -> bool:
    return not await redis.exists(gateway_alive_key(gateway.custody.gateway_id))


async def sweep_until(
    condition: Callable[[], Awaitable[bool]], sweepers: list[Gateway], live: list[Gateway]
) -> list[int]:
    """Run the sweepers' rounds (and the live gateways' heartbeats) until ``condition``;
    how many outcomes each sweeper wrote."""
    written = [0] * len(sweepers)

    async def round_done() -> bool:
        for gateway in live:
            await gateway.custody.beat()

        async def sweep(index: int, sweeper: Gateway) -> None:
            await sweeper.custody.beat()
            written[index] += await sweeper.custody.sweep()

        await asyncio.gather(*(sweep(i, s) for i, s in enumerate(sweepers)))
        return await condition()

    await until(round_done, timeout_s=15, what="the sweep")
    return written


async def records(audit_db: AsyncEngine) -> list[Logged]:
    return await read_logged(audit_db, audit_db, PSEUDONYM_KEY)


def outcomes_of(logged: list[Logged], ids: list[str]) -> Counter[str]:
    wanted = set(ids)
    return Counter(r.request_id for r in logged if r.event == "outcome" and r.request_id in wanted)


def is_forgotten(redis: Redis, gateway: Gateway) -> Callable[[], Awaitable[bool]]:
    """The gateway's registries are empty and its id left the set of gateways."""
    gateway_id = gateway.custody.gateway_id

    async def check() -> bool:
        left = await redis.exists(
            gateway_accepted_key(gateway_id), gateway_sweeping_key(gateway_id)
        )
        return left == 0 and not await redis.sismember(gateways_key(), gateway_id)

    return check


async def test_a_dead_gateways_requests_each_get_one_gateway_lost_outcome_a_live_ones_none(
    audit_db: AsyncEngine, redis_client: Redis, make_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    dead, live, sweeper = await make_gateway(), await make_gateway(), await make_gateway()
    dead_ids = await accept(dead, redis_client, 5)
    live_ids = await accept(live, redis_client, 3)
    assert await redis_client.hlen(dead.custody.registry_key) == 5  # registered on enqueue
    await until(lambda: is_dead(redis_client, dead), timeout_s=5, what="the TTL to pass")

    written = await sweep_until(is_forgotten(redis_client, dead), [sweeper], [live])
    logged = await records(audit_db)

    assert written == [5]
    assert outcomes_of(logged, dead_ids) == Counter(dead_ids)  # one each
    assert outcomes_of(logged, live_ids) == Counter()
    accepted = {r.request_id: r.fields for r in logged if r.event == "accepted"}
    shared = ("endpoint", "tenant_id", "user", "key", "model", "prompt_sha256")
    for record in (r for r in logged if r.event == "outcome"):
        assert (record.status, record.error_code) == (502, GATEWAY_LOST)
        mine = accepted[record.request_id]
        assert {f: record.fields.get(f) for f in shared} == {f: mine.get(f) for f in shared}
    assert await redis_client.exists(gateway_fence_key(dead.custody.gateway_id))
    assert not await redis_client.exists(gateway_fence_key(live.custody.gateway_id))
    assert await redis_client.hlen(live.custody.registry_key) == 3
    assert await sweeper.custody.sweep() == 0  # nothing is swept twice
    assert outcomes_of(await records(audit_db), dead_ids) == Counter(dead_ids)


async def test_a_fenced_gateway_does_not_write_the_outcomes_a_sweeper_wrote(
    audit_db: AsyncEngine,
    redis_client: Redis,
    make_gateway: Callable[..., Awaitable[Gateway]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A gateway paused past its TTL resumes: the requests swept meanwhile are not its to
    record any more; one it accepts after resuming is; one whose enqueue never returned
    (maybe never registered) is too."""
    paused, sweeper = await make_gateway(), await make_gateway()
    swept_ids = await accept(paused, redis_client, 4)
    await until(lambda: is_dead(redis_client, paused), timeout_s=5, what="the TTL to pass")
    await sweep_until(is_forgotten(redis_client, paused), [sweeper], [])

    await paused.custody.beat()  # it resumes
    later_ids = await accept(paused, redis_client, 1)
    allowed = [await paused.custody.may_write_outcome(rid) for rid in swept_ids + later_ids]
    unregistered = await paused.custody.may_write_outcome("never-enqueued", is_registered=False)

    assert allowed == [False] * 4 + [True]
    assert unregistered
    assert "taken for dead" in caplog.text
    assert outcomes_of(await records(audit_db), swept_ids) == Counter(swept_ids)


async def test_a_gateway_ending_requests_while_it_is_swept_records_each_once(
    audit_db: AsyncEngine, redis_client: Redis, make_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    """The paused gateway takes requests out of its registry while a sweeper takes the
    registry: each request gets one outcome record, from one of them."""
    paused, sweeper = await make_gateway(), await make_gateway()
    ids = await accept(paused, redis_client, 200)
    await until(lambda: is_dead(redis_client, paused), timeout_s=5, what="the TTL to pass")
    await sweep_until(lambda: _true(sweeper.custody.is_steady), [], [sweeper])
    by_gateway = 0

    async def end_requests() -> None:
        nonlocal by_gateway
        for request_id in ids:
            if await paused.custody.may_write_outcome(request_id):
                entry = AuditEntry(request_id, "outcome", "/v1/chat/completions", 200)
                await paused.log.append(entry)
                by_gateway += 1

    ending = asyncio.create_task(end_requests())
    written = await sweep_until(is_forgotten(redis_client, paused), [sweeper], [])
    await ending
    print(f"{by_gateway} outcomes by the gateway, {written[0]} by the sweeper")

    assert by_gateway + written[0] == len(ids)
    assert outcomes_of(await records(audit_db), ids) == Counter(ids)


async def test_two_sweepers_racing_write_each_outcome_once(
    audit_db: AsyncEngine, redis_client: Redis, make_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    dead, first, second = await make_gateway(), await make_gateway(), await make_gateway()
    ids = await accept(dead, redis_client, 200)
    await until(lambda: is_dead(redis_client, dead), timeout_s=5, what="the TTL to pass")

    written = await sweep_until(is_forgotten(redis_client, dead), [first, second], [])

    assert sum(written) == len(ids)
    assert 0 in written  # one sweeper claimed the whole registry
    assert outcomes_of(await records(audit_db), ids) == Counter(ids)


class DyingLog(AuditLog):
    """An audit log whose process dies after ``commits`` appends: later ones never return."""

    def __init__(self, log: AuditLog, commits: int) -> None:
        self._log = log
        self._left = commits

    async def append(self, entry: AuditEntry) -> None:
        self._left -= 1
        if self._left < 0:
            await asyncio.Event().wait()  # never
        await self._log.append(entry)


async def test_a_sweeper_that_dies_midway_is_taken_over_without_rewriting(
    audit_db: AsyncEngine, redis_client: Redis, make_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    """The first sweeper commits 4 of 10 outcomes (two batches of 2) and dies in its third
    batch; once its claim expires another sweeper writes the other 6, not the 4 again."""
    dead, survivor = await make_gateway(), await make_gateway()
    doomed = await make_gateway(claim_ttl_s=TTL_S)
    ids = await accept(dead, redis_client, 10)
    await until(lambda: is_dead(redis_client, dead), timeout_s=5, what="the TTL to pass")
    await sweep_until(lambda: _true(doomed.custody.is_steady), [], [doomed])
    dying = OutcomeCustody(
        redis_client,
        DyingLog(doomed.log, commits=4),
        doomed.custody.gateway_id,
        claim_ttl_s=TTL_S,
        sweep_batch=2,
    )
    sweep = asyncio.create_task(dying.sweep_gateway(dead.custody.gateway_id))

    async def four_written() -> bool:
        return sum(outcomes_of(await records(audit_db), ids).values()) == 4

    await until(four_written, timeout_s=10, what="the first 4 outcomes")
    sweep.cancel()  # the doomed sweeper's process is gone
    left = await redis_client.hlen(gateway_sweeping_key(dead.custody.gateway_id))
    written = await sweep_until(is_forgotten(redis_client, dead), [survivor], [])

    assert left == 6
    assert written == [6]
    assert outcomes_of(await records(audit_db), ids) == Counter(ids)


async def _true(value: bool) -> bool:
    return value


async def test_a_running_gateway_stays_alive_and_what_it_leaves_at_stop_is_swept(
    audit_db: AsyncEngine, redis_client: Redis, make_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    """``run`` keeps the liveness key for longer than its TTL (a sweeper running all along
    takes nothing); stopped, it deletes the key, and requests it never ended are swept."""
    leaving, sweeper = await make_gateway(), await make_gateway()
    ids = await accept(leaving, redis_client, 2)
    stop, sweeper_stop = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(leaving.custody.run(stop))
    sweeping = asyncio.create_task(sweeper.custody.run(sweeper_stop))
    try:
        await until(lambda: _true(sweeper.custody.is_steady), timeout_s=5, what="a steady sweeper")
        checked_at = time.monotonic()
        await until(  # several sweeps while both run
            lambda: _true(time.monotonic() - checked_at > 2 * TTL_S), timeout_s=5, what="sweeps"
        )
        swept_while_alive = await redis_client.exists(gateway_fence_key(leaving.custody.gateway_id))
        stop.set()
        await running
        is_alive_after_stop = await redis_client.exists(
            gateway_alive_key(leaving.custody.gateway_id)
        )
        await until(is_forgotten(redis_client, leaving), timeout_s=10, what="the leftovers swept")
    finally:
        stop.set()
        sweeper_stop.set()
        await asyncio.gather(running, sweeping)

    assert not swept_while_alive
    assert not is_alive_after_stop  # deleted at once, not left to expire
    assert outcomes_of(await records(audit_db), ids) == Counter(ids)


async def test_an_entry_whose_enqueue_seemed_to_fail_is_deleted_by_the_next_heartbeat(
    audit_db: AsyncEngine, redis_client: Redis, make_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    """The enqueue ran but its answer was lost: the outcome is written at once (no round
    trip to a Redis that just failed), and the entry goes with the next heartbeat, so a
    later sweep does not record the request a second time."""
    gateway = await make_gateway()
    [request_id] = await accept(gateway, redis_client, 1)

    may_write = await gateway.custody.may_write_outcome(request_id, is_registered=False)
    still_registered = await redis_client.hexists(gateway.custody.registry_key, request_id)
    await gateway.custody.beat()

    assert may_write
    assert still_registered
    assert not await redis_client.hexists(gateway.custody.registry_key, request_id)
