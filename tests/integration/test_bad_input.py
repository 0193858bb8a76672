"""Hand-written hostile input on the real app: invalid UTF-8, bodies of 10 MB, a chat of
100,000 messages, JSON nested thousands deep, negative and huge max_tokens, unknown fields,
and text crafted to inject headers through error messages. Each gets a clear 4xx in the
right envelope (OpenAI's, or Ollama's under /api/), never a 5xx, and nothing reaches the
engine."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack

pytestmark = pytest.mark.integration

DEFAULT_MAX_BODY = 4 * 1024 * 1024  # the gateway's default
QUESTION = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> AsyncIterator[Stack]:
    engine = FakeEngine(max_context=256)
    async with open_stack(
        make_postgres_url(), redis_url, engine, max_body_bytes=DEFAULT_MAX_BODY
    ) as opened:
        yield opened


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return dict(error)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


CHAT = "/v1/chat/completions"
BAD_UTF8_CHAT = b'{"model": "fake-model", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
TEN_MB_JSON = json.dumps({"model": "fake-model", "messages": QUESTION, "pad": "x" * 10_000_000})


def deep(prefix: str, depth: int) -> bytes:
    return (prefix + nested(depth) + "}").encode()


@pytest.mark.parametrize(
    ("path", "content", "status"),
    [
        (CHAT, BAD_UTF8_CHAT, 400),
        (CHAT, b"\xc3\x28 not even json", 400),
        (CHAT, deep('{"model": "fake-model", "messages": ', 100_000), 400),
        (CHAT, deep('{"model": "fake-model", "messages": ', 3_000), 400),
        ("/v1/completions", deep('{"model": "fake-model", "prompt": ', 50_000), 400),
        ("/v1/embeddings", deep('{"model": "fake-model", "input": ', 50_000), 400),
        (CHAT, b"x" * (10 * 1024 * 1024), 413),
        (CHAT, TEN_MB_JSON.encode(), 413),
    ],
    ids=[
        "invalid utf-8 in a string",
        "invalid utf-8 body",
        "json nested 100000 deep",
        "json nested 3000 deep",
        "nested prompt",
        "nested embedding input",
        "10 MB of garbage",
        "10 MB json",
    ],
)
async def test_malformed_or_huge_bodies_are_clear_4xx(
    stack: Stack, path: str, content: bytes, status: int
) -> None:
    key = await stack.key()
    response = await stack.client.post(path, content=content, headers=auth(key))
    openai_error(response, status)
    assert stack.engine.requests == []


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/api/chat", BAD_UTF8_CHAT),
        ("/api/chat", deep('{"model": "fake-model", "messages": ', 100_000)),
        ("/api/embed", deep('{"model": "fake-model", "input": ', 50_000)),
        ("/api/generate", b"x" * (10 * 1024 * 1024)),
    ],
    ids=["invalid utf-8", "nested 100000 deep", "nested embed input", "10 MB"],
)
async def test_ollamas_api_answers_the_same_input_in_ollamas_shape(
    stack: Stack, path: str, content: bytes
) -> None:
    key = await stack.key()
    response = await stack.client.post(path, content=content, headers=auth(key))
    assert 400 <= response.status_code < 500, response.text[:300]
    assert set(response.json()) == {"error"}
    assert isinstance(response.json()["error"], str)
    assert stack.engine.requests == []


async def test_a_chat_of_100000_messages_is_a_quick_clear_400(stack: Stack) -> None:
    """Under the body limit (about 3 MB), but far beyond any context: refused by length,
    without running the model, in well under the request timeout."""
    key = await stack.key()
    messages = [{"role": "user", "content": "x"}] * 100_000
    started = time.monotonic()
    response = await stack.client.post(
        CHAT, json={"model": "fake-model", "messages": messages}, headers=auth(key)
    )
    elapsed = time.monotonic() - started
    error = openai_error(response, 400)
    assert error["code"] == "context_length_exceeded"
    assert stack.engine.requests == []
    print(f"100,000 messages refused in {elapsed:.2f} s")
    assert elapsed < 30


@pytest.mark.parametrize(
    ("max_tokens", "code"),
    [
        (-1, "invalid_request"),
        (0, "invalid_request"),
        (1.5, "invalid_request"),
        (True, "invalid_request"),
        (2**31, "context_length_exceeded"),
        (2**63, "context_length_exceeded"),
        (10**30, "context_length_exceeded"),
    ],
)
async def test_negative_and_huge_max_tokens_are_400s(
    stack: Stack, max_tokens: Any, code: str
) -> None:
    key = await stack.key()
    for field in ("max_tokens", "max_completion_tokens"):
        body = {"model": "fake-model", "messages": QUESTION, field: max_tokens}
        error = openai_error(await stack.client.post(CHAT, json=body, headers=auth(key)), 400)
        assert error["code"] == code
        # both names set one limit; a refusal by length names it max_tokens
        assert error["param"] in (field, "max_tokens")
    assert stack.engine.requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, {"model": "fake-model", "messages": QUESTION}),
        ("/v1/completions", {"model": "fake-model", "prompt": "hi"}),
        ("/v1/embeddings", {"model": "fake-model", "input": "hi"}),
    ],
)
async def test_unknown_top_level_fields_are_400s_naming_the_field(
    stack: Stack, path: str, body: dict[str, Any]
) -> None:
    """As OpenAI does. Fields inside a message are tolerated, as vLLM and Ollama do: tools
    such as Continue send their own there."""
    key = await stack.key()
    unknown = {**body, "frobnicate": 1}
    error = openai_error(await stack.client.post(path, json=unknown, headers=auth(key)), 400)
    assert "frobnicate" in error["message"]
    assert key not in error["message"]
    assert stack.engine.requests == []


INJECTION = "evil\r\nSet-Cookie: session=stolen\r\n\r\n<script>alert(1)</script>"


async def test_text_echoed_in_errors_cannot_inject_headers_or_markup(stack: Stack) -> None:
    key = await stack.key()
    responses = [
        await stack.client.post(
            CHAT, json={"model": INJECTION, "messages": QUESTION}, headers=auth(key)
        ),
        await stack.client.post(
            "/v1/completions", json={"model": INJECTION, "prompt": "hi"}, headers=auth(key)
        ),
        await stack.client.post(
            "/api/chat", json={"model": INJECTION, "messages": QUESTION}, headers=auth(key)
        ),
        await stack.client.get(
            "/v1/models/evil%0D%0ASet-Cookie:%20session=stolen", headers=auth(key)
        ),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, response.text[:300]
        assert "set-cookie" not in response.headers
        assert response.headers["content-type"].startswith("application/json")
        assert "\r\n" not in "".join(f"{k}{v}" for k, v in response.headers.items())
        json.loads(response.text)  # the whole body is one JSON document
    assert stack.engine.requests == []


def b64(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("part", ["header", "payload"])
async def test_a_token_of_deeply_nested_json_is_a_401(stack: Stack, part: str) -> None:
    deep_json = '{"a": ' + nested(4_000) + "}"
    plain = b64('{"alg": "RS256", "typ": "JWT", "kid": "k"}')
    header, payload = (b64(deep_json), b64('{"sub": "x"}'))
    if part == "payload":
        header, payload = plain, b64(deep_json)
    token = f"{header}.{payload}.{b64('signature')}"
    response = await stack.client.post(
        CHAT, json={"model": "fake-model", "messages": QUESTION}, headers=auth(token)
    )
    openai_error(response, 401)


async def test_a_refusal_carries_the_request_id_of_its_audit_record(stack: Stack) -> None:
    key = await stack.key()
    bodies_and_keys = [
        ({"model": "fake-model"}, key),
        ({"model": "gpt-17", "messages": QUESTION}, key),
        ({"model": "fake-model", "messages": QUESTION}, "sk-wrong"),
    ]
    responses = [
        await stack.client.post(CHAT, json=body, headers=auth(caller))
        for body, caller in bodies_and_keys
    ]
    assert [r.status_code for r in responses] == [400, 404, 401]
    refused = {r.request_id for r in await stack.audit_rows() if r.event == "refused"}
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids)
    assert set(ids) == refused


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "status", "param"),
    [
        ("/audit/records/99999999999999999999999", 404, None),  # past BIGINT: was a 500
        ("/audit/records/-1", 404, None),
        ("/audit/records?limit=%C2%B2", 400, "limit"),  # "²" is a digit to str, not to int()
        ("/audit/records?limit=" + "9" * 5000, 400, "limit"),  # past int()'s 4,300 digits
        ("/audit/records?cursor=" + cursor_of("seq:99999999999999999999"), 400, "cursor"),
        ("/audit/records?cursor=" + cursor_of("seq:\u0663"), 400, "cursor"),
        ("/audit/consistency?old_size=%C2%B2&new_size=1", 400, "old_size"),
        ("/audit/consistency?old_size=1&new_size=99999999999999999999", 400, "new_size"),
        ("/audit/records?since=0001-01-01T00:00:00%2B01:00", 400, "since"),  # year 0 in UTC
        ("/audit/records?until=9999-12-31T23:59:59-01:00", 400, "until"),  # year 10000
    ],
)
async def test_numbers_out_of_range_or_not_ascii_are_4xx_on_the_compliance_api(
    stack: Stack, path: str, status: int, param: str | None
) -> None:
    key = await stack.key(
        tenant="ops", user="officer", roles=frozenset({"auditor", "platform_admin"})
    )
    response = await stack.client.get(path, headers=auth(key))
    assert openai_error(response, status)["param"] == param


async def test_a_logit_bias_key_of_non_ascii_digits_is_a_400(stack: Stack) -> None:
    key = await stack.key()
    body = {"model": "fake-model", "messages": QUESTION, "logit_bias": {"\u00b2": 1}}
    response = await stack.client.post(CHAT, json=body, headers=auth(key))
    assert openai_error(response, 400)["param"] == "logit_bias"
