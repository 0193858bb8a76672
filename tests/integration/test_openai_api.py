"""The OpenAI-compatible API on real PostgreSQL and Redis, a real consumer, a fake engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.engine import FakeEngine, count_prompt_tokens, split_tokens
from tests.integration.stack import Stack
from workers.engine import ChatPrompt

pytestmark = pytest.mark.integration

REPLY = "The capital of France is Paris."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _events(body: str) -> list[str]:
    """The data payloads of an SSE body, checking the framing as it goes."""
    assert body.endswith("\n\n")
    frames = body.split("\n\n")[:-1]
    assert all(f.startswith("data: ") for f in frames), frames
    return [f.removeprefix("data: ") for f in frames]


async def test_chat_completion_returns_the_answer_and_true_usage(stack: Stack) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": QUESTION},
        headers=_auth(key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert response.headers["x-request-id"] == body["id"]
    assert body["choices"][0]["message"] == {"role": "assistant", "content": REPLY, "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    ((_, prompt, _),) = stack.engine.requests
    prompt_tokens = count_prompt_tokens(prompt)
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(split_tokens(REPLY)),
        "total_tokens": prompt_tokens + len(split_tokens(REPLY)),
    }


async def test_streaming_chat_is_framed_like_openai(stack: Stack) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/chat/completions",
        json={
            "model": "fake-model",
            "messages": QUESTION,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers=_auth(key),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == REPLY
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == len(split_tokens(REPLY))
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_stream_without_include_usage_has_no_usage_chunk(stack: Stack) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": QUESTION, "stream": True},
        headers=_auth(key),
    )
    chunks = [json.loads(e) for e in _events(response.text)[:-1]]
    assert all(c["choices"] for c in chunks)


async def test_text_completion_with_echo(stack: Stack) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/completions",
        json={"model": "fake-model", "prompt": "Paris is", "max_tokens": 3, "echo": True},
        headers=_auth(key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Paris is" + "".join(split_tokens(REPLY)[:3])
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


async def test_streaming_text_completion(stack: Stack) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/completions",
        json={"model": "fake-model", "prompt": "Paris is", "stream": True, "max_tokens": 50},
        headers=_auth(key),
    )
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == REPLY
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_models_lists_live_workers_only(stack: Stack) -> None:
    key = await stack.key()
    response = await stack.client.get("/v1/models", headers=_auth(key))
    assert response.status_code == 200
    assert response.json()["data"] == [
        {
            "id": "fake-model",
            "created": response.json()["data"][0]["created"],
            "owned_by": "enclave",
            "max_model_len": 256,
            "object": "model",
        }
    ]


async def test_sampling_parameters_reach_the_engine(stack: Stack) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/chat/completions",
        json={
            "model": "fake-model",
            "messages": QUESTION,
            "temperature": 0,
            "top_p": 0.5,
            "seed": 7,
            "stop": "\n",
            "max_completion_tokens": 9,
            "top_k": 3,
        },
        headers=_auth(key),
    )
    assert response.status_code == 200
    ((_, prompt, sampling),) = stack.engine.requests
    assert isinstance(prompt, ChatPrompt)
    assert prompt.messages[0].content == QUESTION[0]["content"]
    assert (sampling.temperature, sampling.top_p, sampling.seed) == (0, 0.5, 7)
    assert (sampling.stop, sampling.max_tokens, sampling.top_k) == (("\n",), 9, 3)


BAD_BODIES: list[tuple[str, Any, int, str | None, str | None]] = [
    ("malformed json", b"{not json", 400, "invalid_request", None),
    ("empty body", b"", 400, "invalid_request", None),
    (
        "wrong type",
        {"model": "fake-model", "messages": QUESTION, "max_tokens": "ten"},
        400,
        "invalid_request",
        "max_tokens",
    ),
    (
        "temperature out of range",
        {"model": "fake-model", "messages": QUESTION, "temperature": 5},
        400,
        "invalid_request",
        "temperature",
    ),
    ("no messages", {"model": "fake-model", "messages": []}, 400, "invalid_request", "messages"),
    (
        "bad role",
        {"model": "fake-model", "messages": [{"role": "god", "content": "x"}]},
        400,
        "invalid_request",
        "messages[0].role",
    ),
    (
        "unknown field",
        {"model": "fake-model", "messages": QUESTION, "frobnicate": 1},
        400,
        "invalid_request",
        None,
    ),
    (
        "n > 128",
        {"model": "fake-model", "messages": QUESTION, "n": 129},
        400,
        "invalid_request",
        "n",
    ),
    (
        "top_logprobs without logprobs",
        {"model": "fake-model", "messages": QUESTION, "top_logprobs": 2},
        400,
        "invalid_request",
        "top_logprobs",
    ),
    (
        "top_logprobs above 20",
        {"model": "fake-model", "messages": QUESTION, "logprobs": True, "top_logprobs": 21},
        400,
        "invalid_request",
        "top_logprobs",
    ),
    ("unknown model", {"model": "gpt-17", "messages": QUESTION}, 404, "model_not_found", "model"),
    (
        "max_tokens beyond context",
        {"model": "fake-model", "messages": QUESTION, "max_tokens": 100_000},
        400,
        "context_length_exceeded",
        "max_tokens",
    ),
    (
        "prompt plus max_tokens beyond context",
        {"model": "fake-model", "messages": QUESTION, "max_tokens": 250},
        400,
        "context_length_exceeded",
        "max_tokens",
    ),
    (
        "oversize body",
        {"model": "fake-model", "messages": [{"role": "user", "content": "x" * 100_000}]},
        413,
        "request_too_large",
        None,
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_bad_input_gets_a_clear_4xx_envelope_and_an_audit_record(
    stack: Stack, body: Any, status: int, code: str | None, param: str | None
) -> None:
    key = await stack.key()
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = await stack.client.post(
        "/v1/chat/completions",
        headers=_auth(key) | {"Content-Type": "application/json"},
        **kwargs,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    rows = await stack.audit_rows()
    assert [r.status for r in rows if r.event in ("refused", "outcome")] == [status]


async def test_prompt_is_never_stored_only_its_digest(stack: Stack) -> None:
    key = await stack.key()
    await stack.client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": QUESTION},
        headers=_auth(key),
    )
    rows = await stack.audit_rows()
    assert [r.event for r in rows] == ["accepted", "outcome"]
    accepted, outcome = rows
    assert accepted.request_id == outcome.request_id
    assert outcome.status == 200
    assert outcome.prompt_tokens == count_prompt_tokens(stack.engine.requests[0][1])
    assert outcome.completion_tokens == len(split_tokens(REPLY))
    assert outcome.weights_digest == stack.engine.info.weights_digest
    assert outcome.worker_id == "worker-1"
    assert outcome.prompt_sha256 is not None
    assert len(outcome.prompt_sha256) == 64
    assert outcome.answer_sha256 is not None
    assert len(outcome.answer_sha256) == 64
    every_value = " ".join(str(v) for r in rows for v in r.__dict__.values())
    assert "capital" not in every_value
    assert "Paris" not in every_value


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(max_context=256, capacity=4, reply=REPLY)


async def test_logit_bias_reaches_the_worker_as_token_ids(stack: Stack) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": QUESTION, "logit_bias": {"17": 2.5, "5": -100}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200
    [(_, _, sampling)] = stack.engine.requests
    assert sampling.logit_bias == ((5, -100.0), (17, 2.5))


@pytest.mark.parametrize(
    "bias", [{"Paris": 1}, {"-3": 1}, {"5": 101}, {"5": -100.5}, {str(i): 1 for i in range(301)}]
)
async def test_a_bad_logit_bias_is_a_400(stack: Stack, bias: dict[str, float]) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": QUESTION, "logit_bias": bias},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "logit_bias"
