"""CommandBatcher on real Redis: the commands of one event-loop turn share one pipeline;
each caller gets its own reply or its own error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway.redis_batch import CommandBatcher
from tests.processes import free_port

pytestmark = pytest.mark.integration


class CountingRedis(redis.asyncio.Redis):
    """The real client, counting the pipelines (round trips) it is asked for."""

    pipelines = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.pipelines += 1
        return super().pipeline(*args, **kwargs)


@pytest.fixture
async def counting(redis_url: str, redis_client: redis.asyncio.Redis) -> Any:
    client = CountingRedis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_one_turns_commands_share_one_round_trip_and_get_their_own_replies(
    counting: CountingRedis,
) -> None:
    await counting.hset("h", mapping={f"f{i}": i for i in range(20)})
    batcher = CommandBatcher(counting)
    replies = await asyncio.gather(
        *(batcher.call(lambda p, i=i: p.hget("h", f"f{i}")) for i in range(20))
    )
    assert replies == [str(i).encode() for i in range(20)]
    assert counting.pipelines == 1
    # A later turn is a round trip of its own.
    assert await batcher.call(lambda p: p.hdel("h", "f0")) == 1
    assert counting.pipelines == 2


async def test_a_failing_command_fails_its_caller_only(counting: CountingRedis) -> None:
    await counting.set("text", "x")
    batcher = CommandBatcher(counting)
    wrong, right = await asyncio.gather(
        batcher.call(lambda p: p.hget("text", "f")),  # a HASH command on a string
        batcher.call(lambda p: p.get("text")),
        return_exceptions=True,
    )
    assert isinstance(wrong, ResponseError)
    assert right == b"x"


async def test_a_lost_connection_fails_every_caller_and_the_next_turn_tries_again() -> None:
    nowhere = redis.asyncio.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    batcher = CommandBatcher(nowhere)
    results = await asyncio.gather(
        *(batcher.call(lambda p: p.get("k")) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results)
    with pytest.raises(RedisConnectionError):
        await batcher.call(lambda p: p.get("k"))
    await nowhere.aclose()


async def test_a_cancelled_caller_leaves_the_others_their_replies(
    counting: CountingRedis,
) -> None:
    await counting.set("k", "v")
    batcher = CommandBatcher(counting)
    gone = asyncio.ensure_future(batcher.call(lambda p: p.get("k")))
    kept = asyncio.ensure_future(batcher.call(lambda p: p.get("k")))
    gone.cancel()
    assert await kept == b"v"
    assert gone.cancelled()


async def test_several_commands_of_one_caller_ride_the_same_pipeline_in_order(
    counting: CountingRedis,
) -> None:
    await counting.set("text", "x")
    batcher = CommandBatcher(counting)
    first, second = await asyncio.gather(
        batcher.call_all(lambda p: p.hincrby("h1", "n", 1), lambda p: p.hincrby("h1", "n", 2)),
        batcher.call_all(lambda p: p.incr("c"), lambda p: p.expire("c", 60)),
    )
    assert (first, second) == ([1, 3], [1, True])
    assert counting.pipelines == 1
    with pytest.raises(ResponseError):  # the caller hears of the error among its commands
        await batcher.call_all(lambda p: p.hget("text", "f"), lambda p: p.incr("c"))
    assert await counting.get("c") == b"2"  # the others ran: a pipeline, not a transaction
