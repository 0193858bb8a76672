"""Load for fault tests: many concurrent streaming clients, and what each of them got.

The fake model answers a load prompt with numbered words carrying the prompt's nonce
(``numbered_reply``), so any token that is duplicated, lost, reordered or delivered to the
wrong client shows in the text a client received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.queue.protocol import WORKER_GROUP, queues_key
from tests.audit_records import Logged
from workers.engine import ChatPrompt, Prompt

REPLY_WORDS = 20
MODEL = "fake-model"


def numbered_reply(prompt: Prompt) -> str:
    """The fake model's answer: ``<nonce>.0 <nonce>.1 …`` for the last message's nonce."""
    nonce = prompt.messages[-1].content if isinstance(prompt, ChatPrompt) else prompt.text
    return " ".join(f"{nonce.strip()}.{i}" for i in range(REPLY_WORDS))


def expected_text(nonce: str) -> str:
    return " ".join(f"{nonce}.{i}" for i in range(REPLY_WORDS))


@dataclass
class Reply:
    """One request as its client saw it."""

    nonce: str
    status: int | None = None
    """None: no HTTP response at all (a transport error, in ``failure``)."""
    request_id: str | None = None
    text: str = ""
    error: dict[str, Any] | None = None
    """The error envelope's ``error``: the response body's, or a stream's final event's."""
    headers: dict[str, str] = field(default_factory=dict)
    is_done: bool = False
    """The stream ended with ``data: [DONE]``."""
    failure: str | None = None
    sent_at: float = 0.0
    ended_at: float = 0.0

    @property
    def is_complete(self) -> bool:
        return self.status == 200 and self.is_done and self.error is None


def chat_body(nonce: str, *, stream: bool = True) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": nonce}], "stream": stream}


async def stream_chat(
    client: httpx.AsyncClient,
    key: str,
    *,
    timeout_s: float = 60.0,
    on_chunk: Callable[[Reply], None] | None = None,
) -> Reply:
    """One streaming chat request, read to its end (or until ``timeout_s``)."""
    reply = Reply(nonce=f"n{uuid.uuid4().hex[:12]}", sent_at=time.monotonic())
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat_body(reply.nonce), headers=headers
            ) as response:
                reply.status = response.status_code
                reply.headers = dict(response.headers)
                reply.request_id = response.headers.get("x-request-id")
                if response.status_code != 200:
                    reply.error = json.loads(await response.aread())["error"]
                else:
                    async for line in response.aiter_lines():
                        read_event(reply, line)
                        if on_chunk is not None:
                            on_chunk(reply)
    except TimeoutError:
        reply.failure = f"no end within {timeout_s:g} s"
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as exc:
        reply.failure = f"{type(exc).__name__}: {exc}"
    reply.ended_at = time.monotonic()
    return reply


def read_event(reply: Reply, line: str) -> None:
    if not line.startswith("data: "):
        return
    data = line.removeprefix("data: ")
    if data == "[DONE]":
        reply.is_done = True
        return
    event = json.loads(data)
    if "error" in event:
        reply.error = event["error"]
        return
    reply.request_id = reply.request_id or event.get("id")
    for choice in event.get("choices", []):
        reply.text += choice.get("delta", {}).get("content") or ""


class Load:
    """``clients`` concurrent clients, each sending one streaming request after another
    until ``stop``; ``replies`` grows as requests end."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        key: str,
        clients: int,
        *,
        pause_after_503_s: float = 0.1,
        is_stopped_by_failure: bool = False,
    ) -> None:
        self._client = client
        self._is_stopped_by_failure = is_stopped_by_failure
        """A client whose request got no HTTP answer (its server is gone) sends no more."""
        self._key = key
        self._clients = clients
        self._pause_after_503_s = pause_after_503_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Future[list[None]] | None = None
        self.replies: list[Reply] = []
        self.chunks = 0
        """Stream events received so far, by every client."""

    def start(self) -> None:
        self._task = asyncio.gather(*(self._one_client() for _ in range(self._clients)))

    async def cancel(self) -> None:
        """After a test that failed before ``stop``: its clients are cancelled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def stop(self, timeout_s: float = 30.0) -> list[Reply]:
        """Let each client finish its request in flight; every reply."""
        self._stopping.set()
        assert self._task is not None
        async with asyncio.timeout(timeout_s):
            await self._task
        return self.replies

    def since(self, at: float) -> list[Reply]:
        """Replies to requests sent at or after ``at`` (time.monotonic())."""
        return [r for r in self.replies if r.sent_at >= at]

    def _count(self, reply: Reply) -> None:
        self.chunks += 1

    async def _one_client(self) -> None:
        while not self._stopping.is_set():
            reply = await stream_chat(self._client, self._key, on_chunk=self._count)
            self.replies.append(reply)
            if reply.failure is not None and self._is_stopped_by_failure:
                return
            if reply.status == 503:  # a client's think time, not a synchronisation
                await asyncio.sleep(self._pause_after_503_s)


def text_faults(replies: list[Reply]) -> list[str]:
    """Replies whose text is not the model's answer (complete) or a clean prefix of it (a
    stream that ended early, with an error event): duplicated, lost, reordered or foreign
    tokens, or a stream cut short in silence."""
    faults = []
    for reply in replies:
        expected = expected_text(reply.nonce)
        if reply.is_complete and reply.text != expected:
            faults.append(f"{reply.request_id}: complete but {reply.text!r}")
        elif not expected.startswith(reply.text):
            faults.append(f"{reply.request_id}: {reply.text!r} is not a prefix of the answer")
        elif reply.status == 200 and not (reply.is_done or reply.error or reply.failure):
            faults.append(f"{reply.request_id}: cut short without an error")
    return faults


def envelope_faults(replies: list[Reply]) -> list[str]:
    """Refusals that are not OpenAI's error envelope, or a 503 without Retry-After."""
    faults = []
    for reply in replies:
        if reply.status in (None, 200):
            continue
        if reply.error is None or set(reply.error) != {"message", "type", "param", "code"}:
            faults.append(f"{reply.status}: {reply.error!r}")
        elif reply.status == 503 and not reply.headers.get("retry-after", "").isdigit():
            faults.append(f"503 {reply.error['code']} without Retry-After")
    return faults


def outcome_faults(rows: list[Logged]) -> list[str]:
    """Accepted requests without exactly one outcome record, and outcomes of requests never
    accepted."""
    accepted = {r.request_id for r in rows if r.event == "accepted"}
    outcomes = Counter(r.request_id for r in rows if r.event == "outcome")
    faults = [f"{rid}: {outcomes[rid]} outcome records" for rid in accepted if outcomes[rid] != 1]
    faults += [f"{rid}: outcome without accepted" for rid in set(outcomes) - accepted]
    return faults


async def pending_jobs(redis: Redis, model: str = MODEL) -> int:
    """Jobs some worker took and has not acknowledged, in every stream of ``model``."""
    total = 0
    for stream in await redis.smembers(queues_key(model)):
        try:
            summary: Any = await redis.xpending(stream, WORKER_GROUP)
        except ResponseError:  # the stream or its group is gone
            continue
        total += int(summary["pending"])
    return total


async def no_pending_jobs(redis: Redis, model: str = MODEL) -> bool:
    return await pending_jobs(redis, model) == 0


async def poll(condition: Callable[[], Any], *, timeout_s: float, what: str) -> float:
    """Await ``condition()`` (a coroutine function or a plain one) until it is true; the
    seconds it took. Polling with a deadline, never a fixed sleep."""
    start = time.monotonic()
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.02)
