"""A small asyncio load generator for OpenAI-compatible streaming chat completions (aiohttp):
closed loop (N clients, each sends its next request when the last one ends) and open loop
(Poisson arrivals at a fixed rate, whatever the server's pace). Every request asks for the
same number of output tokens (``ignore_eos``); one Sample per request measured."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

import aiohttp

from tests.bench.engines_report import Round, Sample

REQUEST_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    """Up to and without ``/v1``."""
    api_key: str
    model: str


def request_body(model: str, index: int, max_tokens: int) -> dict[str, object]:
    """A short prompt that differs per request, greedy, exactly ``max_tokens`` tokens out."""
    prompt = f"Story {index}: tell me about a lighthouse keeper who finds a message in a bottle."
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def stream_one(
    session: aiohttp.ClientSession, endpoint: Endpoint, body: dict[str, object], t0: float
) -> Sample:
    """Send one request and read its stream; ok only if it ends with [DONE] and the usage
    reports exactly the tokens asked for."""
    sent = time.perf_counter()
    arrivals: list[float] = []
    usage_tokens = None
    is_done = False
    try:
        async with session.post(f"{endpoint.base_url}/v1/chat/completions", json=body) as resp:
            if resp.status != 200:
                await resp.read()
                return Sample(ok=False, started_s=sent - t0, e2e_s=time.perf_counter() - sent)
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    is_done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    break
                if any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                    arrivals.append(time.perf_counter())
                if event.get("usage"):
                    usage_tokens = event["usage"].get("completion_tokens")
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
        return Sample(ok=False, started_s=sent - t0, e2e_s=time.perf_counter() - sent)
    ended = time.perf_counter()
    tokens = usage_tokens if usage_tokens is not None else len(arrivals)
    is_ok = is_done and bool(arrivals) and tokens == body["max_tokens"]
    return Sample(
        ok=is_ok,
        started_s=sent - t0,
        ttft_s=arrivals[0] - sent if arrivals else float("nan"),
        e2e_s=ended - sent,
        output_tokens=tokens,
        chunks_s=tuple(t - t0 for t in arrivals),
    )


def _session(endpoint: Endpoint, connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {endpoint.api_key}"},
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


async def closed_loop(
    endpoint: Endpoint, clients: int, *, warmup_s: float, measure_s: float, max_tokens: int
) -> Round:
    """``clients`` loops, each sending its next request when the last one ends, until
    ``warmup_s + measure_s`` has passed; the window is the last ``measure_s`` of it."""
    t0 = time.perf_counter()
    samples: list[Sample] = []
    counter = iter(range(1_000_000_000))

    async def client(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() - t0 < warmup_s + measure_s:
            body = request_body(endpoint.model, next(counter), max_tokens)
            samples.append(await stream_one(session, endpoint, body, t0))

    async with _session(endpoint, clients) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return Round(samples, warmup_s, warmup_s + measure_s)


async def open_loop(
    endpoint: Endpoint, rate_per_s: float, *, measure_s: float, max_tokens: int, seed: int
) -> Round:
    """Poisson arrivals at ``rate_per_s`` for ``measure_s``, the window; every request is
    followed to its end. The same seed gives every target the same arrival times."""
    arrivals = random.Random(seed)
    t0 = time.perf_counter()
    tasks: list[asyncio.Task[Sample]] = []
    async with _session(endpoint, 0) as session:
        at = arrivals.expovariate(rate_per_s)
        while at < measure_s:
            delay = at - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule of arrivals, not a synchronisation
            body = request_body(endpoint.model, len(tasks), max_tokens)
            tasks.append(asyncio.create_task(stream_one(session, endpoint, body, t0)))
            at += arrivals.expovariate(rate_per_s)
        samples = list(await asyncio.gather(*tasks))
    return Round(samples, 0.0, measure_s)
