"""Redis commands of concurrent requests, sent together: one round trip per event-loop turn.

Under load many requests reach the same step at once (a read of the inbox wakes dozens of
them): each asking Redis on its own costs a pool checkout, a socket write and a read apiece.
``CommandBatcher.call`` queues a command; the commands queued in one turn of the event loop
leave in one pipeline, not a transaction, and each caller gets its own reply or its own
error. A lone caller waits one loop turn more, nothing else.

Only for commands that are independent of each other and need no script loading (a
pipeline checks every script before it runs: a round trip of its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

Command = Callable[[Pipeline], object]


class CommandBatcher:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queued: list[tuple[Command, asyncio.Future[Any]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def call(self, command: Command) -> Any:
        """Queue ``command`` (it adds itself to the pipeline it is given) and return its
        reply; raise what Redis or the connection raised for it."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._queued.append((command, reply))
        if self._flush is None:
            self._flush = loop.create_task(self._send())
        return await reply

    async def call_all(self, *commands: Command) -> list[Any]:
        """Queue several commands (in order, in the same pipeline) and return their
        replies; raise the first error among them."""
        loop = asyncio.get_running_loop()
        replies: list[asyncio.Future[Any]] = []
        for command in commands:
            reply: asyncio.Future[Any] = loop.create_future()
            self._queued.append((command, reply))
            replies.append(reply)
        if self._flush is None:
            self._flush = loop.create_task(self._send())
        results: list[Any] = []
        for reply in replies:  # every reply taken, so no error goes unretrieved
            try:
                results.append(await reply)
            except Exception as exc:
                results.append(exc)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _send(self) -> None:
        batch: list[tuple[Command, asyncio.Future[Any]]] = []
        try:
            await asyncio.sleep(0)  # one turn: the callers woken with this one queue theirs
            batch, self._queued, self._flush = self._queued, [], None
            async with self._redis.pipeline(transaction=False) as pipe:
                for command, _ in batch:
                    command(pipe)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: every caller gets the error
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            return
        except BaseException:  # the gateway is stopping
            if not batch:  # stopped before it took the queue: nobody else will send it
                batch, self._queued, self._flush = self._queued, [], None
            for _, reply in batch:
                reply.cancel()
            raise
        for (_, reply), value in zip(batch, replies, strict=True):
            _answer(reply, value)


def _answer(reply: asyncio.Future[Any], value: Any) -> None:
    if reply.done():  # its caller was cancelled meanwhile
        return
    if isinstance(value, Exception):
        reply.set_exception(value)
    else:
        reply.set_result(value)
