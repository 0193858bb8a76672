"""Structured output reaches the worker as a checked JSON constraint: OpenAI's
``response_format`` and Ollama's ``format``; a bad schema is the caller's 400. The real
model's answers are validated in tests/e2e/test_chat.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "Name a city and its country."}]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("response_format", "schema", "is_object"),
    [
        (
            {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}},
            SCHEMA,
            False,
        ),
        ({"type": "json_object"}, None, True),
        ({"type": "text"}, None, False),
    ],
)
async def test_response_format_reaches_the_worker(
    stack: Stack, response_format: dict[str, Any], schema: Any, is_object: bool
) -> None:
    key = await stack.key()
    body = {"model": "fake-model", "messages": QUESTION, "response_format": response_format}
    response = await stack.client.post("/v1/chat/completions", json=body, headers=bearer(key))
    assert response.status_code == 200
    [(_, _, sampling)] = stack.engine.requests
    assert (json.loads(sampling.json_schema) if sampling.json_schema else None) == schema
    assert sampling.json_object is is_object


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format.json_schema"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wrong"}}},
            "response_format.json_schema",
        ),
        ({"type": "json_schema", "json_schema": {"schema": [1]}}, "response_format.json_schema"),
        ({"type": "yaml"}, "response_format"),
        ("json", "response_format"),
    ],
)
async def test_a_bad_response_format_is_a_400(
    stack: Stack, response_format: Any, param: str
) -> None:
    key = await stack.key()
    body = {"model": "fake-model", "messages": QUESTION, "response_format": response_format}
    response = await stack.client.post("/v1/chat/completions", json=body, headers=bearer(key))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert stack.engine.requests == []


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/api/chat", {"messages": QUESTION}),
        ("/api/generate", {"prompt": "Name a city."}),
    ],
)
@pytest.mark.parametrize(
    ("format_", "schema", "is_object"), [("json", None, True), (SCHEMA, SCHEMA, False)]
)
async def test_ollamas_format_reaches_the_worker(
    stack: Stack, path: str, extra: dict[str, Any], format_: Any, schema: Any, is_object: bool
) -> None:
    key = await stack.key()
    body = {"model": "fake-model", "stream": False, "format": format_, **extra}
    response = await stack.client.post(path, json=body, headers=bearer(key))
    assert response.status_code == 200
    [(_, _, sampling)] = stack.engine.requests
    assert (json.loads(sampling.json_schema) if sampling.json_schema else None) == schema
    assert sampling.json_object is is_object


@pytest.mark.parametrize("format_", ["yaml", {"type": "wrong"}, 3])
async def test_a_bad_ollama_format_is_a_400_in_ollamas_shape(stack: Stack, format_: Any) -> None:
    key = await stack.key()
    body = {"model": "fake-model", "messages": QUESTION, "format": format_}
    response = await stack.client.post("/api/chat", json=body, headers=bearer(key))
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
