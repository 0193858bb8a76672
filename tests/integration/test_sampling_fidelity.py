"""``n`` and log probabilities through the gateway and queue, with the openai SDK: several
choices in one job, each framed by index; the worker's per-token figures in OpenAI's chat
and legacy shapes. The fake engine gives every choice the same words (log probability -0.25,
alternatives marked ``#1``, ``#2``, ...); the real model is in tests/e2e/test_sampling.py."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.fakes.engine import split_tokens
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

ANSWER = "The capital of France is Paris."
QUESTION: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]


async def client_for(stack: Stack) -> openai.AsyncOpenAI:
    base = str(stack.client.base_url).rstrip("/")
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=await stack.key(), max_retries=0)


def sampled(stack: Stack) -> Any:
    [(_, _, sampling)] = stack.engine.requests
    return sampling


async def test_n_choices_come_from_one_job(stack: Stack) -> None:
    client = await client_for(stack)
    completion = await client.chat.completions.create(model="fake-model", messages=QUESTION, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {ANSWER}
    assert {c.finish_reason for c in completion.choices} == {"stop"}
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3 * len(split_tokens(ANSWER))
    assert sampled(stack).n == 3


async def test_n_choices_stream_by_index(stack: Stack) -> None:
    client = await client_for(stack)
    stream = await client.chat.completions.create(
        model="fake-model", messages=QUESTION, n=2, stream=True
    )
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert texts == {0: ANSWER, 1: ANSWER}
    assert reasons == {0: "stop", 1: "stop"}


async def test_chat_logprobs_cover_every_token_with_its_alternatives(stack: Stack) -> None:
    client = await client_for(stack)
    completion = await client.chat.completions.create(
        model="fake-model", messages=QUESTION, logprobs=True, top_logprobs=2
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content is not None
    assert "".join(e.token for e in logprobs.content) == ANSWER
    for entry in logprobs.content:
        assert entry.logprob == -0.25
        assert entry.bytes == list(entry.token.encode())
        assert [t.token for t in entry.top_logprobs] == [entry.token, entry.token + "#1"]
    assert sampled(stack).logprobs == 2


async def test_chat_logprobs_without_alternatives(stack: Stack) -> None:
    client = await client_for(stack)
    completion = await client.chat.completions.create(
        model="fake-model", messages=QUESTION, logprobs=True
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content
    assert all(e.top_logprobs == [] for e in logprobs.content)
    assert sampled(stack).logprobs == 0


async def test_no_logprobs_unless_asked(stack: Stack) -> None:
    client = await client_for(stack)
    completion = await client.chat.completions.create(model="fake-model", messages=QUESTION)
    assert completion.choices[0].logprobs is None
    assert sampled(stack).logprobs is None


async def test_streamed_chat_logprobs_arrive_with_their_text(stack: Stack) -> None:
    client = await client_for(stack)
    stream = await client.chat.completions.create(
        model="fake-model", messages=QUESTION, logprobs=True, top_logprobs=1, stream=True
    )
    tokens = []
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.logprobs and choice.logprobs.content:
                assert "".join(e.token for e in choice.logprobs.content) == choice.delta.content
                tokens.extend(e.token for e in choice.logprobs.content)
    assert "".join(tokens) == ANSWER


async def test_legacy_logprobs_are_parallel_lists_with_offsets(stack: Stack) -> None:
    client = await client_for(stack)
    completion = await client.completions.create(
        model="fake-model", prompt="The capital of France is", logprobs=3, n=2, max_tokens=50
    )
    assert len(completion.choices) == 2
    for choice in completion.choices:
        logprobs = choice.logprobs
        assert logprobs is not None
        tokens = logprobs.tokens or []
        assert "".join(tokens) == choice.text
        assert logprobs.token_logprobs == [-0.25] * len(tokens)
        offsets = [len("".join(tokens[:i])) for i in range(len(tokens))]
        assert logprobs.text_offset == offsets
        assert all(len(top) == 3 for top in logprobs.top_logprobs or [])


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": "x", "logprobs": 6}, "logprobs"),
        ("/v1/completions", {"prompt": "x", "logprobs": 1, "echo": True}, "echo"),
        ("/v1/completions", {"prompt": "x", "best_of": 3}, "best_of"),
        ("/v1/completions", {"prompt": "x", "n": 0}, "n"),
        (
            "/v1/chat/completions",
            {
                "messages": QUESTION,
                "n": 2,
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": "required",
            },
            "n",
        ),
    ],
)
async def test_what_cannot_be_honoured_is_a_400(
    stack: Stack, path: str, body: dict[str, Any], param: str
) -> None:
    key = await stack.key()
    response = await stack.client.post(
        path, json={"model": "fake-model", **body}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert stack.engine.requests == []
