"""A replay of what the Continue IDE plugin sends to an Ollama server, against Enclave with
an API key, asserting the response fields Continue reads.

Continue's core/llm/llms/Ollama.ts (continuedev/continue) does, in order:
- on start, ``POST /api/show`` with ``{"name": model}``; it splits ``parameters`` into
  lines matching ``^(\\S+)\\s+((?:".*")|\\S+)$`` (a line that does not match throws and
  drops the rest), looks for ``.Suffix`` in ``template`` (fill-in-the-middle), and newer
  versions read the ``*.context_length`` key of ``model_info`` and ``capabilities``;
- ``GET /api/tags`` and reads ``models[].name``;
- ``POST /api/chat`` with ``options`` (num_predict, num_ctx, ...), ``keep_alive`` 1800 and
  ``stream``; it splits the body on newlines, JSON-parses each line, throws on ``error``
  and reads ``message.role`` and ``message.content``;
- ``POST /api/embed`` with ``{"model", "input": [chunks]}``; it reads ``embeddings`` and
  throws when it is missing or empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from redis.asyncio import Redis

from gateway.settings import OllamaSettings
from tests.fakes.engine import CHAT_TEMPLATE, FakeEngine
from tests.integration.stack import Stack, open_stack, run_consumer

pytestmark = pytest.mark.integration

CHAT_MODEL = "coder:1b"  # as a Continue user names it in config.yaml
EMBED_MODEL = "nomic-embed-text:latest"
ALIASES = OllamaSettings(aliases={CHAT_MODEL: "fake-model", EMBED_MODEL: "fake-embed"})
ANSWER = "def add(a, b):\n    return a + b"
PARAMETER_LINE = re.compile(r'^(\S+)\s+((?:".*")|\S+)$')  # Continue's own pattern


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> AsyncIterator[Stack]:
    chat = FakeEngine(reply=ANSWER, max_context=8192)
    embedder = FakeEngine(model="fake-embed", task="embed", embedding_size=16)
    async with (
        open_stack(make_postgres_url(), redis_url, chat, ollama=ALIASES) as opened,
        run_consumer(opened.redis, embedder, worker_id="embed-worker"),
    ):
        yield opened


def continue_headers(key: str) -> dict[str, str]:
    """What Continue sets when ``apiKey`` is configured for the Ollama provider."""
    return {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}


async def test_continue_session_replay(stack: Stack) -> None:
    headers = continue_headers(await stack.key())
    http = stack.client

    shown = await http.post("/api/show", content=json.dumps({"name": CHAT_MODEL}), headers=headers)
    assert shown.status_code == 200
    show = shown.json()
    lines = show["parameters"].split("\n")
    assert lines == ["temperature 0.6"]
    assert all(PARAMETER_LINE.match(line) for line in lines)
    assert show["template"] == CHAT_TEMPLATE
    assert ".Suffix" not in show["template"]  # no fill-in-the-middle offered
    context = [v for k, v in show["model_info"].items() if k.endswith(".context_length")]
    assert context == [8192]
    assert "completion" in show["capabilities"]
    assert "embedding" not in show["capabilities"]

    tags = await http.get("/api/tags", headers=headers)
    assert tags.status_code == 200
    assert sorted(m["name"] for m in tags.json()["models"]) == [CHAT_MODEL, EMBED_MODEL]

    chat_body = {
        "model": CHAT_MODEL,
        "messages": [
            {"role": "system", "content": "You are a helpful coding assistant."},
            {"role": "user", "content": "Write add(a, b) in Python."},
        ],
        "options": {"temperature": 0.01, "num_predict": 4096, "num_ctx": 8192},
        "keep_alive": 1800,
        "stream": True,
    }
    parts = []
    async with http.stream(
        "POST", "/api/chat", content=json.dumps(chat_body), headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        buffer = ""
        async for chunk in response.aiter_text():  # Continue's own framing
            buffer += chunk
            *complete, buffer = buffer.split("\n")
            parts.extend(json.loads(line) for line in complete if line.strip())
    assert buffer == ""
    assert all("error" not in part for part in parts)
    assert all(part["message"]["role"] == "assistant" for part in parts)
    assert "".join(part["message"]["content"] for part in parts) == ANSWER
    assert [part["done"] for part in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1]["done_reason"] == "stop"
    assert parts[-1]["eval_count"] == len(ANSWER.split())

    chunks = ["def add(a, b):", "    return a + b", "class Calculator:"]
    embedded = await http.post(
        "/api/embed",
        content=json.dumps({"model": EMBED_MODEL, "input": chunks}),
        headers=headers,
    )
    assert embedded.status_code == 200
    embeddings = embedded.json()["embeddings"]
    assert len(embeddings) == len(chunks)
    assert all(len(vector) == 16 for vector in embeddings)
    assert all(isinstance(x, float) for vector in embeddings for x in vector)


async def test_continue_sees_an_ollama_error_line_it_can_throw(stack: Stack) -> None:
    """A refused chat is a non-200 whose body has ``error``: what Continue surfaces."""
    headers = continue_headers(await stack.key())
    body = {"model": EMBED_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    response = await stack.client.post("/api/chat", json=body, headers=headers)
    assert response.status_code == 400
    assert "embedding model" in response.json()["error"]
    embed = await stack.client.post(
        "/api/embed", json={"model": CHAT_MODEL, "input": ["x"]}, headers=headers
    )
    assert embed.status_code == 400
    assert "does not support embeddings" in embed.json()["error"]
    missing = await httpx.AsyncClient(base_url=str(stack.client.base_url)).get("/api/tags")
    assert missing.status_code == 401
    assert set(missing.json()) == {"error"}
