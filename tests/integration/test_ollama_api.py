"""Ollama's API under /api/, driven by the official ``ollama`` Python client with an API key:
the same authentication, queue and audit as the OpenAI API, answers shaped as Ollama's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import ollama
import pytest
from redis.asyncio import Redis

from gateway.settings import OllamaSettings
from tests.fakes.engine import CHAT_TEMPLATE, FakeEngine
from tests.integration.stack import Stack, open_stack
from workers.engine import ChatPrompt, TextPrompt

pytestmark = pytest.mark.integration

ANSWER = "The capital of France is Paris."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ALIASES = OllamaSettings(aliases={"fake:7b": "fake-model"})
STEP_S = 0.02  # the fake engine's time per token


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> AsyncIterator[Stack]:
    engine = FakeEngine(step_delay_s=STEP_S)
    async with open_stack(make_postgres_url(), redis_url, engine, ollama=ALIASES) as opened:
        yield opened


async def client_for(stack: Stack, key: str | None = None) -> ollama.AsyncClient:
    headers = {"Authorization": f"Bearer {key or await stack.key()}"}
    return ollama.AsyncClient(host=str(stack.client.base_url), headers=headers)


async def test_chat_answers_as_ollama_does(stack: Stack) -> None:
    client = await client_for(stack)
    response = await client.chat(model="fake:7b", messages=QUESTION, stream=False)
    assert response.message.role == "assistant"
    assert response.message.content == ANSWER
    assert response.done is True
    assert response.done_reason == "stop"
    assert response.model == "fake:7b"
    assert response.eval_count == len(ANSWER.split())  # the fake's tokens are words
    assert response.prompt_eval_count == 7  # 6 words and the role
    assert response.total_duration is not None
    assert response.eval_duration is not None
    assert response.prompt_eval_duration is not None
    assert response.total_duration >= response.eval_duration + response.prompt_eval_duration
    # the five tokens after the first took five steps; the first came after one
    assert response.eval_duration >= 4 * STEP_S * 1e9
    assert response.prompt_eval_duration < response.eval_duration
    assert response.load_duration == 0
    [(_, prompt, _)] = stack.engine.requests
    assert isinstance(prompt, ChatPrompt)


async def test_chat_streams_ndjson_ending_with_the_counts(stack: Stack) -> None:
    client = await client_for(stack)
    parts = [
        part async for part in await client.chat(model="fake-model", messages=QUESTION, stream=True)
    ]
    assert "".join(p.message.content for p in parts) == ANSWER
    assert all(not p.done for p in parts[:-1])
    last = parts[-1]
    assert last.done is True
    assert last.done_reason == "stop"
    assert last.eval_count == len(ANSWER.split())
    assert last.created_at is not None


async def test_generate_with_a_system_prompt_or_raw(stack: Stack) -> None:
    client = await client_for(stack)
    templated = await client.generate(model="fake-model", prompt="Capital?", system="Be brief.")
    assert templated.response == ANSWER
    assert templated.done_reason == "stop"
    parts = [
        part
        async for part in await client.generate(
            model="fake-model:latest", prompt="Q: capital?\nA:", raw=True, stream=True,
            options={"num_predict": 3, "temperature": 0.2, "stop": ["\n"], "seed": 7},
        )
    ]  # fmt: skip
    assert "".join(p.response for p in parts) == " ".join(ANSWER.split()[:3])
    assert parts[-1].done_reason == "length"
    (_, chat, _), (_, raw, sampling) = stack.engine.requests
    assert isinstance(chat, ChatPrompt)
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "Be brief."),
        ("user", "Capital?"),
    ]
    assert isinstance(raw, TextPrompt)
    assert (sampling.max_tokens, sampling.temperature, sampling.stop, sampling.seed) == (
        3,
        0.2,
        ("\n",),
        7,
    )


async def test_an_empty_chat_or_prompt_loads_the_model_and_runs_nothing(stack: Stack) -> None:
    client = await client_for(stack)
    chat = await client.chat(model="fake:7b", messages=[], stream=False)
    generated = await client.generate(model="fake:7b", prompt="", stream=False)
    assert (chat.done, chat.done_reason) == (True, "load")
    assert (generated.done, generated.done_reason) == (True, "load")
    assert stack.engine.requests == []


async def test_list_show_ps_and_version(stack: Stack) -> None:
    client = await client_for(stack)
    listed = await client.list()
    assert [m.model for m in listed.models] == ["fake:7b"]  # an alias stands for the model
    assert listed.models[0].details is not None
    assert listed.models[0].details.family == "fake"
    shown = await client.show("fake:7b")
    assert shown.modelinfo is not None
    assert shown.modelinfo["fake.context_length"] == 2048
    assert shown.template == CHAT_TEMPLATE
    assert shown.capabilities == ["completion"]
    assert shown.parameters == "temperature 0.6"
    running = await client.ps()
    assert [(m.model, m.context_length) for m in running.models] == [("fake:7b", 2048)]
    version = await httpx.AsyncClient(base_url=str(stack.client.base_url)).get("/api/version")
    assert version.json() == {"version": ALIASES.version}


async def test_a_model_outside_the_tenants_list_is_not_found(stack: Stack) -> None:
    key = await stack.key(tenant="restricted")
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    tenants = await stack.client.get(
        "/admin/v1/tenants", headers={"Authorization": f"Bearer {root}"}
    )
    restricted = next(t for t in tenants.json()["data"] if t["name"] == "restricted")
    await stack.client.put(
        f"/admin/v1/tenants/{restricted['id']}/models",
        json={"models": ["other-model"]},
        headers={"Authorization": f"Bearer {root}"},
    )
    client = await client_for(stack, key)
    assert (await client.list()).models == []
    with pytest.raises(ollama.ResponseError) as caught:
        await client.chat(model="fake:7b", messages=QUESTION, stream=False)
    assert caught.value.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/pull", {"model": "llama3"}),
        ("POST", "/api/push", {"model": "fake:7b"}),
        ("POST", "/api/create", {"model": "mine", "from": "fake:7b"}),
        ("POST", "/api/copy", {"source": "fake:7b", "destination": "mine"}),
        ("DELETE", "/api/delete", {"model": "fake:7b"}),
    ],
)
async def test_model_management_is_for_operators(
    stack: Stack, method: str, path: str, body: dict[str, str]
) -> None:
    key = await stack.key()
    response = await stack.client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 403
    assert "managed by the operators" in response.json()["error"]
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/chat", {"model": "nope", "messages": QUESTION}, 404),
        ("/api/chat", {"model": "fake:7b", "messages": QUESTION, "options": {"mirostat": 2}}, 400),
        ("/api/chat", {"model": "fake:7b", "messages": QUESTION, "options": {"bogus": 1}}, 400),
        ("/api/chat", {"model": "fake:7b", "messages": [{"role": "wizard", "content": "x"}]}, 400),
        ("/api/chat", {"model": "fake:7b", "messages": "hello"}, 400),
        ("/api/generate", {"model": "fake:7b", "prompt": "x", "suffix": "y"}, 400),
        ("/api/generate", {"model": "fake:7b", "prompt": "x", "options": {"num_predict": -9}}, 400),
        ("/api/generate", {"prompt": "x"}, 400),
        ("/api/show", {}, 400),
        ("/api/show", {"model": "nope"}, 404),
    ],
)
async def test_bad_input_is_a_4xx_in_ollamas_shape(
    stack: Stack, path: str, body: dict[str, object], status: int
) -> None:
    key = await stack.key()
    response = await stack.client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == status
    error = response.json()
    assert set(error) == {"error"}
    assert isinstance(error["error"], str)
    assert error["error"]


@pytest.mark.parametrize("path", ["/api/tags", "/api/ps"])
async def test_no_key_is_a_401(stack: Stack, path: str) -> None:
    response = await stack.client.get(path)
    assert response.status_code == 401
    assert set(response.json()) == {"error"}


async def test_ollama_requests_are_audited_like_any_other(stack: Stack) -> None:
    client = await client_for(stack)
    await client.chat(model="fake:7b", messages=QUESTION, stream=False)
    rows = [r for r in await stack.audit_rows() if r.endpoint == "/api/chat"]
    assert [(r.event, r.status) for r in rows] == [("accepted", 202), ("outcome", 200)]
    assert rows[1].model == "fake-model"


async def test_num_predict_beyond_the_context_is_a_cap_not_an_error(stack: Stack) -> None:
    """Ollama stops where the context ends; Continue sends num_predict 4096 by default."""
    client = await client_for(stack)
    response = await client.chat(
        model="fake:7b", messages=QUESTION, stream=False, options={"num_predict": 100_000}
    )
    assert response.message.content == ANSWER
    [(_, _, sampling)] = stack.engine.requests
    assert sampling.max_tokens == 100_000
    assert sampling.max_tokens_is_cap


async def test_the_root_says_ollama_is_running_without_a_key(stack: Stack) -> None:
    """What Ollama clients probe first (the CLI sends HEAD / before any command)."""
    got = await stack.client.get("/")
    assert (got.status_code, got.text) == (200, "Ollama is running")
    probed = await stack.client.head("/")
    assert probed.status_code == 200


@pytest.mark.parametrize(
    ("path", "extra"), [("/api/chat", {"messages": QUESTION}), ("/api/generate", {"prompt": "Hi"})]
)
@pytest.mark.parametrize("think", [True, "high"])
async def test_thinking_is_refused_as_ollama_refuses_it(
    stack: Stack, path: str, extra: dict[str, object], think: object
) -> None:
    key = await stack.key()
    body = {"model": "fake:7b", "think": think, "stream": False, **extra}
    response = await stack.client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400
    assert response.json() == {"error": '"fake:7b" does not support thinking'}
    assert stack.engine.requests == []


async def test_think_false_is_fine(stack: Stack) -> None:
    client = await client_for(stack)
    response = await client.chat(model="fake:7b", messages=QUESTION, think=False, stream=False)
    assert response.message.content == ANSWER


async def test_logprobs_come_with_each_piece_as_ollama_sends_them(stack: Stack) -> None:
    client = await client_for(stack)
    pieces = [
        p
        async for p in await client.chat(
            model="fake:7b", messages=QUESTION, stream=True, logprobs=True, top_logprobs=2
        )
    ]
    with_text = [p for p in pieces if p.message.content]
    for piece in with_text:
        assert piece.logprobs is not None
        assert "".join(e.token for e in piece.logprobs) == piece.message.content
        assert all(len(e.top_logprobs or []) == 2 for e in piece.logprobs)
    [(_, _, sampling)] = stack.engine.requests
    assert sampling.logprobs == 2


async def test_logprobs_of_a_whole_answer(stack: Stack) -> None:
    client = await client_for(stack)
    answer = await client.generate(model="fake:7b", prompt="Hi", stream=False, logprobs=True)
    assert answer.logprobs is not None
    assert "".join(e.token for e in answer.logprobs) == answer.response
    assert all(e.logprob == -0.25 for e in answer.logprobs)
    plain = await client.generate(model="fake:7b", prompt="Hi", stream=False)
    assert plain.logprobs is None


async def test_top_logprobs_above_20_is_a_400(stack: Stack) -> None:
    key = await stack.key()
    body = {"model": "fake:7b", "prompt": "Hi", "logprobs": True, "top_logprobs": 21}
    response = await stack.client.post(
        "/api/generate", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
