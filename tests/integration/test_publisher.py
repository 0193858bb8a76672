"""The worker's publisher on real Redis: an engine step's events for one inbox leave as one
stream entry, in order, and never after a write made after them (flag, ack); charges to
fair-scheduling counters are summed."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio

from gateway.queue.protocol import (
    BATCH_FIELD,
    MESSAGE_FIELD,
    Delta,
    Event,
    Finished,
    Job,
    SamplingOptions,
    Started,
    decode_batch,
    decode_event,
    service_key,
)
from workers.publisher import EventPublisher

pytestmark = pytest.mark.integration

INBOX_A = "enclave:inbox:a"
INBOX_B = "enclave:inbox:b"


def job(
    job_id: str,
    tenant: str = "t",
    weight: float = 1.0,
    inbox: str = INBOX_A,
    reads_batches: bool = True,
) -> Job:
    return Job(
        id=job_id,
        model="m",
        kind="chat",
        reply_to=inbox,
        tenant=tenant,
        sampling=SamplingOptions(max_tokens=5),
        enqueued_at=0.0,
        weight=weight,
        reads_batches=reads_batches,
    )


async def entries(client: redis.asyncio.Redis, inbox: str) -> list[list[Event]]:
    """Each stream entry of ``inbox``, as the events it carries."""
    found: list[Any] = await client.xrange(inbox)
    out = []
    for _entry_id, fields in found:
        if BATCH_FIELD in fields:
            out.append(decode_batch(fields[BATCH_FIELD]))
        else:
            out.append([decode_event(fields[MESSAGE_FIELD])])
    return out


async def flushed(publisher: EventPublisher) -> None:
    await publisher.close()  # flushes everything pending


async def test_one_steps_events_for_one_inbox_are_one_entry_in_order(
    redis_client: redis.asyncio.Redis,
) -> None:
    publisher = EventPublisher(redis_client)
    publisher.start()
    step = [Delta(f"j{i}", f"t{i}", 1, seq=1) for i in range(5)]
    for i, event in enumerate(step):
        publisher.reply(job(event.job_id, inbox=INBOX_A if i % 2 == 0 else INBOX_B), event)
    await flushed(publisher)
    assert await entries(redis_client, INBOX_A) == [[step[0], step[2], step[4]]]
    assert await entries(redis_client, INBOX_B) == [[step[1], step[3]]]


async def test_a_gateway_that_does_not_read_batches_gets_one_entry_per_event(
    redis_client: redis.asyncio.Redis,
) -> None:
    publisher = EventPublisher(redis_client)
    publisher.start()
    step = [Delta(f"j{i}", f"t{i}", 1, seq=1) for i in range(3)]
    for event in step:
        publisher.reply(job(event.job_id, reads_batches=False), event)
    await flushed(publisher)
    found: list[Any] = await redis_client.xrange(INBOX_A)
    assert [set(fields) for _, fields in found] == [{MESSAGE_FIELD}] * 3
    assert await entries(redis_client, INBOX_A) == [[e] for e in step]


async def test_events_never_move_past_a_flag_or_an_ack_written_after_them(
    redis_client: redis.asyncio.Redis,
) -> None:
    publisher = EventPublisher(redis_client)
    publisher.start()
    await redis_client.xadd("jobs", {MESSAGE_FIELD: b"x"}, id="1-1")
    publisher.reply(job("j1"), Delta("j1", "a", 1, seq=1))
    publisher.reply(job("j1"), Finished("j1", "stop", 3, 1))
    publisher.ack("jobs", b"1-1")
    publisher.set_flag("flag:j2", 60)
    publisher.reply(job("j2"), Started("j2", "w", 3, "sha256:00"))
    await flushed(publisher)
    # Three groups: before the ack, and after the flag; the ack's XDEL went through.
    assert await entries(redis_client, INBOX_A) == [
        [Delta("j1", "a", 1, seq=1), Finished("j1", "stop", 3, 1)],
        [Started("j2", "w", 3, "sha256:00")],
    ]
    assert await redis_client.xlen("jobs") == 0
    assert await redis_client.get("flag:j2") == b"1"


async def test_charges_are_summed_per_queue_and_weighted(
    redis_client: redis.asyncio.Redis,
) -> None:
    publisher = EventPublisher(redis_client)
    publisher.start()
    heavy, light = job("j1", "acme", weight=2.0), job("j2", "globex")
    for _ in range(10):
        publisher.charge(heavy, 1)
        publisher.charge(light, 1)
    publisher.charge(light, -4)  # a refund
    await flushed(publisher)
    served = await redis_client.hgetall(service_key("m"))
    assert {k: float(v) for k, v in served.items()} == {
        heavy.queue_name.encode(): 5.0,
        light.queue_name.encode(): 6.0,
    }
