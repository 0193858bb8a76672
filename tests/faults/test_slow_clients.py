"""A client that never reads and one that reads a byte a second, each holding a long stream,
while ten others come and go: the gateway buffers a bounded number of events for each, stops
the jobs of clients that cannot keep up (recording their outcome while they are still
connected), and everyone else is served at normal speed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.queue.client import MAX_BUFFERED_EVENTS, RedisJobQueue
from tests.fakes.engine import FakeEngine
from tests.faults.conftest import StartLoad
from tests.faults.load import (
    MODEL,
    numbered_reply,
    outcome_faults,
    poll,
    stream_chat,
    text_faults,
)
from tests.integration.stack import Stack, open_stack
from workers.engine import ChatPrompt, Prompt

pytestmark = pytest.mark.integration

LONG_WORD_BYTES = 1000
LONG_MAX_TOKENS = 500_000
RECEIVE_BUFFER_BYTES = 4096


def reply(prompt: Prompt) -> str:
    """Long streams (nonce ``long-…``) in words of 1 kB, so socket buffers fill soon; the
    numbered answer otherwise."""
    assert isinstance(prompt, ChatPrompt)
    nonce = prompt.messages[-1].content
    if nonce.startswith("long-"):
        return " ".join(f"{nonce}.{i}." + "x" * LONG_WORD_BYTES for i in range(20))
    return numbered_reply(prompt)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(reply=reply, step_delay_s=0.002, capacity=8, max_context=1_000_000)


@pytest.fixture
async def stack(
    make_postgres_url: Any, redis_url: str, redis_client: Redis, engine: FakeEngine
) -> AsyncIterator[Stack]:
    async with open_stack(make_postgres_url(), redis_url, engine) as opened:
        yield opened


@contextlib.asynccontextmanager
async def long_stream(stack: Stack, key: str, nonce: str) -> AsyncIterator[socket.socket]:
    """A raw connection asking for a very long stream, with a small receive buffer; the
    caller reads from it as it likes (or never)."""
    host, port = str(stack.client.base_url).removeprefix("http://").rstrip("/").split(":")
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": nonce}],
            "stream": True,
            "ignore_eos": True,
            "max_tokens": LONG_MAX_TOKENS,
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, (host, int(port)))
        await loop.sock_sendall(sock, head + body)
        yield sock
    finally:
        sock.close()


async def read_a_byte_a_second(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while await loop.sock_recv(sock, 1):
        await asyncio.sleep(1.0)  # the client's own pace, not a synchronisation


def job_id_of(engine: FakeEngine, nonce: str) -> str | None:
    for request_id, prompt, _ in engine.requests:
        if isinstance(prompt, ChatPrompt) and prompt.messages[-1].content == nonce:
            return request_id
    return None


def latencies(replies: list[Any]) -> list[float]:
    return [r.ended_at - r.sent_at for r in replies]


async def test_clients_that_cannot_keep_up_are_stopped_and_others_served_at_speed(
    stack: Stack, engine: FakeEngine, start_load: StartLoad
) -> None:
    key = await stack.key()
    queue: RedisJobQueue = stack.app.state.inference.queue
    baseline = await asyncio.gather(*(stream_chat(stack.client, key) for _ in range(10)))
    assert all(r.is_complete for r in baseline), baseline

    most_buffered = 0
    sampling = True

    async def sample() -> None:
        nonlocal most_buffered
        while sampling:
            most_buffered = max([most_buffered, *queue.buffered().values()])
            await asyncio.sleep(0.02)  # a sampling period

    sampler = asyncio.create_task(sample())
    started_at = time.monotonic()
    async with (
        long_stream(stack, key, "long-stuck"),
        long_stream(stack, key, "long-slow") as slow,
    ):
        load = start_load(stack.client, key, 10)
        reader = asyncio.create_task(read_a_byte_a_second(slow))
        await poll(
            lambda: job_id_of(engine, "long-stuck") and job_id_of(engine, "long-slow"),
            timeout_s=10,
            what="both long streams to start",
        )
        stuck_id, slow_id = job_id_of(engine, "long-stuck"), job_id_of(engine, "long-slow")
        try:
            stopped_s = await poll(
                lambda: {stuck_id, slow_id} <= set(engine.aborted),
                timeout_s=30,
                what="both long jobs stopped",
            )
        except TimeoutError:
            pytest.fail(f"long jobs still running; {most_buffered} events buffered for one")
        finally:
            replies = await load.stop()
            sampling = False
            await sampler
        rows = await stack.audit_rows()  # while both clients are still connected
        reader.cancel()
    print(
        f"long jobs stopped after {stopped_s:.1f} s; at most {most_buffered} events buffered "
        f"for one request; {len(replies)} other requests, latency median "
        f"{statistics.median(latencies(replies)):.3f} s (alone: "
        f"{statistics.median(latencies(baseline)):.3f} s), max {max(latencies(replies)):.3f} s"
    )
    outcomes = {r.request_id: (r.status, r.error_code) for r in rows if r.event == "outcome"}
    assert outcomes[stuck_id] == outcomes[slow_id] == (499, "client_too_slow")
    assert outcome_faults(rows) == []
    assert most_buffered <= MAX_BUFFERED_EVENTS
    assert all(r.is_complete for r in replies)
    assert text_faults(replies) == []
    during = [r for r in replies if r.sent_at >= started_at]
    assert statistics.median(latencies(during)) < 3 * statistics.median(latencies(baseline)) + 0.2
