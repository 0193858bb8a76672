"""The soak load: many clients, each sending one streaming chat completion after another
to a real gateway, and what each request got."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.processes import DEMO_MODEL

MAX_TOKENS = 16
"""Small answers, so the two CPU cores keep up with 100 clients; ``ignore_eos`` makes every
answer exactly this long, which the usage each stream reports must confirm."""
REQUEST_TIMEOUT_S = 300.0
QUEUE_TIMEOUT_S = "300"
"""``x-enclave-queue-timeout``: a soak client would rather wait than be refused."""


@dataclass
class Outcome:
    """One request as its client saw it."""

    status: int | None = None
    text: str = ""
    is_done: bool = False
    completion_tokens: int | None = None
    error: Any = None
    failure: str | None = None
    ended_at: float = 0.0

    @property
    def is_ok(self) -> bool:
        return (
            self.status == 200
            and self.is_done
            and self.error is None
            and self.failure is None
            and self.text != ""
            and self.completion_tokens == MAX_TOKENS
        )

    def describe(self) -> str:
        detail = self.failure or self.error or f"text={self.text!r}"
        return f"status={self.status} done={self.is_done} tokens={self.completion_tokens}: {detail}"


def chat_body(client_no: int, request_no: int) -> dict[str, Any]:
    question = f"Client {client_no}, question {request_no}: name a colour and a fruit."
    return {
        "model": DEMO_MODEL,
        "messages": [{"role": "user", "content": question}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
    }


def read_event(outcome: Outcome, line: str) -> None:
    if not line.startswith("data: "):
        return
    data = line.removeprefix("data: ")
    if data == "[DONE]":
        outcome.is_done = True
        return
    event = json.loads(data)
    if "error" in event:
        outcome.error = event["error"]
        return
    for choice in event.get("choices", []):
        outcome.text += choice.get("delta", {}).get("content") or ""
    if event.get("usage"):
        outcome.completion_tokens = event["usage"]["completion_tokens"]


async def stream_chat(client: httpx.AsyncClient, body: dict[str, Any]) -> Outcome:
    outcome = Outcome()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                outcome.status = response.status_code
                if response.status_code != 200:
                    outcome.error = (await response.aread()).decode(errors="replace")[:500]
                else:
                    async for line in response.aiter_lines():
                        read_event(outcome, line)
    except TimeoutError:
        outcome.failure = f"no end within {REQUEST_TIMEOUT_S:g} s"
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as exc:
        outcome.failure = f"{type(exc).__name__}: {exc}"
    outcome.ended_at = time.monotonic()
    return outcome


@dataclass
class Load:
    """``clients`` concurrent clients looping until ``stop``; ``outcomes`` grows as
    requests end."""

    base_url: str
    api_key: str
    clients: int
    outcomes: list[Outcome] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Future[list[None]] | None = None

    def start(self) -> None:
        self._task = asyncio.gather(*(self._one_client(n) for n in range(self.clients)))

    async def stop(self) -> list[Outcome]:
        """Let every client finish the request it has in flight; every outcome."""
        self._stopping.set()
        assert self._task is not None
        async with asyncio.timeout(REQUEST_TIMEOUT_S + 30):
            await self._task
        return self.outcomes

    async def cancel(self) -> None:
        """After a failure before ``stop``."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def burst(self) -> list[Outcome]:
        """One request from every client at once, to their ends."""

        async def one(client_no: int) -> Outcome:
            async with self._client() as client:
                return await stream_chat(client, chat_body(client_no, -1))

        return list(await asyncio.gather(*(one(n) for n in range(self.clients))))

    def _client(self) -> httpx.AsyncClient:
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "x-enclave-queue-timeout": QUEUE_TIMEOUT_S,
        }
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=30.0)
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def _one_client(self, client_no: int) -> None:
        async with self._client() as client:
            request_no = 0
            while not self._stopping.is_set():
                self.outcomes.append(await stream_chat(client, chat_body(client_no, request_no)))
                request_no += 1
