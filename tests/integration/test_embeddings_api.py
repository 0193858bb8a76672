"""Embeddings through the real app, queue and consumer, on fake engines: OpenAI's
/v1/embeddings (openai SDK) and Ollama's /api/embed and /api/embeddings (ollama client),
with the same authentication, quotas and audit as chat, and 400s in each dialect."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import ollama
import openai
import pytest
from redis.asyncio import Redis

from gateway.settings import OllamaSettings
from tests.fakes.engine import CLS, SEP, FakeEngine, fake_vector, split_tokens, word_id
from tests.integration.stack import Stack, open_stack, run_consumer

pytestmark = pytest.mark.integration

EMBEDDER = "fake-embed"
CHAT_MODEL = "fake-model"
SIZE = 8
MAX_CONTEXT = 16
ALIASES = OllamaSettings(aliases={"embed:small": EMBEDDER})
TEXTS = ["The cat sits on the mat.", "A feline rests on a rug."]


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> AsyncIterator[Stack]:
    """An embedding worker (the stack's engine) beside a chat worker."""
    embedder = FakeEngine(
        model=EMBEDDER, task="embed", embedding_size=SIZE, max_context=MAX_CONTEXT
    )
    async with (
        open_stack(make_postgres_url(), redis_url, embedder, ollama=ALIASES) as opened,
        run_consumer(opened.redis, FakeEngine(model=CHAT_MODEL), worker_id="chat-worker"),
    ):
        yield opened


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def openai_client(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{str(stack.client.base_url).rstrip('/')}/v1",
        api_key=await stack.key(),
        max_retries=0,
    )


async def ollama_client(stack: Stack) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=str(stack.client.base_url), headers=auth(await stack.key()))


def tokens_of(text: str) -> list[int]:
    return [CLS, *(word_id(t) for t in split_tokens(text)), SEP]


def expected(text: str) -> list[float]:
    return list(struct.unpack(f"<{SIZE}f", fake_vector(tokens_of(text), SIZE)))


async def test_openai_sdk_gets_float_vectors_in_order_with_usage(stack: Stack) -> None:
    client = await openai_client(stack)
    response = await client.embeddings.create(model=EMBEDDER, input=TEXTS)
    assert response.object == "list"
    assert response.model == EMBEDDER
    assert [(d.object, d.index) for d in response.data] == [("embedding", 0), ("embedding", 1)]
    assert [d.embedding for d in response.data] == [expected(t) for t in TEXTS]
    prompt_tokens = sum(len(tokens_of(t)) for t in TEXTS)  # 8 + 8
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (16, 16)
    assert prompt_tokens == 16
    [(_, token_ids, dimensions)] = stack.engine.embedded
    assert token_ids == [tokens_of(t) for t in TEXTS]
    assert dimensions is None


async def test_base64_is_little_endian_float32_of_the_same_vectors(stack: Stack) -> None:
    key = await stack.key()
    bodies = []
    for encoding in ("float", "base64"):
        response = await stack.client.post(
            "/v1/embeddings",
            json={"model": EMBEDDER, "input": TEXTS[0], "encoding_format": encoding},
            headers=auth(key),
        )
        assert response.status_code == 200
        bodies.append(response.json())
    as_floats, as_base64 = bodies
    raw = base64.b64decode(as_base64["data"][0]["embedding"])
    assert len(raw) == 4 * SIZE
    assert list(struct.unpack(f"<{SIZE}f", raw)) == as_floats["data"][0]["embedding"]
    assert set(as_base64) == {"object", "data", "model", "usage"}
    # the openai SDK asks for base64 by default and decodes it itself
    decoded = await (await openai_client(stack)).embeddings.create(model=EMBEDDER, input=TEXTS[0])
    assert decoded.data[0].embedding == as_floats["data"][0]["embedding"]


async def test_token_id_arrays_reach_the_engine_as_given(stack: Stack) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/embeddings",
        json={"model": EMBEDDER, "input": [[101, 7, 102], [101, 9, 9, 102]]},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    single = await stack.client.post(
        "/v1/embeddings", json={"model": EMBEDDER, "input": [101, 5, 102]}, headers=auth(key)
    )
    assert len(single.json()["data"]) == 1
    assert [ids for _, ids, _ in stack.engine.embedded] == [
        [[101, 7, 102], [101, 9, 9, 102]],
        [[101, 5, 102]],
    ]


def long_text(words: int) -> str:
    return " ".join(f"w{i}" for i in range(words))


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"input": []}, "input", "empty array"),
        ({"input": ""}, "input", "empty string"),
        ({"input": ["a", ""]}, "input", "input[1] must not be an empty string"),
        ({"input": [[]]}, "input", "input[0] must not be an empty array"),
        ({"input": [1, "a"]}, "input", "not a mix"),
        ({"input": [-1]}, "input", "not a mix"),
        ({"input": {"text": "a"}}, "input", "must be a string"),
        ({"input": 5}, "input", "must be a string"),
        ({"input": ["a"] * 2049}, "input", "at most 2048"),
        ({"input": "a", "encoding_format": "bytes"}, "encoding_format", "Invalid request"),
        ({"input": "a", "dimensions": 0}, "dimensions", "Invalid request"),
        ({"input": "a", "truncate": True}, None, "Unrecognized request argument"),
        ({"input": "a", "dimensions": 4}, None, "does not support Matryoshka"),
        ({"input": [99999]}, "input", "vocabulary has 30522 tokens"),
        ({"input": long_text(MAX_CONTEXT)}, "input", "maximum context length is 16"),
    ],
)
async def test_bad_input_is_a_400_in_openais_envelope(
    stack: Stack, body: dict[str, Any], param: str | None, says: str
) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/embeddings", json={"model": EMBEDDER} | body, headers=auth(key)
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert says in error["message"]
    assert stack.engine.embedded == []  # nothing ran


async def test_a_missing_model_or_body_is_a_400(stack: Stack) -> None:
    key = await stack.key()
    for content in (b"", b"{", json.dumps({"input": "a"}).encode()):
        response = await stack.client.post("/v1/embeddings", content=content, headers=auth(key))
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_the_wrong_kind_of_model_is_a_clear_400_in_each_dialect(stack: Stack) -> None:
    key = await stack.key()
    question = [{"role": "user", "content": "hi"}]
    calls = [
        ("/v1/embeddings", {"model": CHAT_MODEL, "input": "hi"}, "does not support embeddings"),
        ("/v1/chat/completions", {"model": EMBEDDER, "messages": question}, "embedding model"),
        ("/v1/completions", {"model": EMBEDDER, "prompt": "hi"}, "embedding model"),
        ("/api/embed", {"model": CHAT_MODEL, "input": "hi"}, "does not support embeddings"),
        ("/api/embeddings", {"model": CHAT_MODEL, "prompt": "hi"}, "does not support embed"),
        ("/api/chat", {"model": "embed:small", "messages": question}, "embedding model"),
    ]
    for path, body, says in calls:
        response = await stack.client.post(path, json=body, headers=auth(key))
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        message = error if path.startswith("/api/") else error["message"]
        assert says in message, (path, message)
        if not path.startswith("/api/"):
            assert (error["code"], error["param"]) == ("model_not_supported", "model")
    refused = [r for r in await stack.audit_rows() if r.event == "refused"]
    assert [(r.endpoint, r.status) for r in refused] == [(p, 400) for p, _, _ in calls]
    assert stack.engine.embedded == []
    assert stack.engine.requests == []


async def test_an_embeddings_request_is_audited_like_chat(stack: Stack) -> None:
    key = await stack.key()
    body = {"model": EMBEDDER, "input": TEXTS, "encoding_format": "base64"}
    response = await stack.client.post("/v1/embeddings", json=body, headers=auth(key))
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("embd-")
    rows = [r for r in await stack.audit_rows() if r.request_id == request_id]
    assert [(r.event, r.status, r.endpoint) for r in rows] == [
        ("accepted", 202, "/v1/embeddings"),
        ("outcome", 200, "/v1/embeddings"),
    ]
    accepted, outcome = rows
    prompt = json.dumps(TEXTS, separators=(",", ":"))  # canonical JSON of the inputs
    assert accepted.prompt_sha256 == hashlib.sha256(prompt.encode()).hexdigest()
    assert (outcome.model, outcome.prompt_tokens, outcome.completion_tokens) == (EMBEDDER, 16, 0)
    assert outcome.weights_digest == stack.engine.info.weights_digest
    # the answer's digest is that of the base64 vectors, as this client received them
    vectors = [d["embedding"] for d in response.json()["data"]]
    answer = json.dumps(vectors, separators=(",", ":"))
    assert outcome.answer_sha256 == hashlib.sha256(answer.encode()).hexdigest()


async def test_tokens_are_reserved_without_an_answer_and_settle_to_the_count(
    stack: Stack, redis_client: Redis
) -> None:
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    key = await stack.key()
    first = await stack.client.post(
        "/v1/embeddings", json={"model": EMBEDDER, "input": "hi"}, headers=auth(key)
    )
    rows = await stack.audit_rows()
    key_id = rows[-1].key_id
    response = await stack.client.put(
        f"/admin/v1/limits/key/{key_id}", json={"tokens_per_minute": 5000}, headers=auth(root)
    )
    assert response.status_code == 200, response.text
    assert first.status_code == 200

    response = await stack.client.post(
        "/v1/embeddings", json={"model": EMBEDDER, "input": TEXTS}, headers=auth(key)
    )
    assert response.status_code == 200
    # reserved: the prompt's bytes / 3 and no answer (a chat reserves 1024 more)
    reserved = 5000 - int(response.headers["x-ratelimit-remaining-tokens"])
    assert 0 < reserved < 100
    amounts = [k for k in await redis_client.keys("enclave:quota:key:*:amounts")]
    assert len(amounts) == 1
    assert int(await redis_client.hget(amounts[0], "_sum") or 0) == 16  # the true count


async def test_ollama_client_embeds_through_an_alias(stack: Stack) -> None:
    client = await ollama_client(stack)
    response = await client.embed(model="embed:small", input=TEXTS)
    assert response.model == "embed:small"
    assert [list(e) for e in response.embeddings] == [expected(t) for t in TEXTS]
    assert response.prompt_eval_count == 16
    assert response.load_duration == 0
    assert response.total_duration is not None
    assert response.total_duration > 0
    single = await client.embed(model=EMBEDDER, input=TEXTS[0])
    assert [list(e) for e in single.embeddings] == [expected(TEXTS[0])]


async def test_ollama_cuts_long_inputs_unless_told_not_to(stack: Stack) -> None:
    key = await stack.key()
    text = long_text(40)
    cut = await stack.client.post(
        "/api/embed", json={"model": EMBEDDER, "input": text}, headers=auth(key)
    )
    assert cut.status_code == 200
    assert cut.json()["prompt_eval_count"] == MAX_CONTEXT
    refused = await stack.client.post(
        "/api/embed",
        json={"model": EMBEDDER, "input": text, "truncate": False, "keep_alive": "5m"},
        headers=auth(key),
    )
    assert refused.status_code == 400
    assert "maximum context length is 16" in refused.json()["error"]


async def test_ollama_legacy_embeddings_and_loading(stack: Stack) -> None:
    key = await stack.key()
    legacy = await stack.client.post(
        "/api/embeddings", json={"model": EMBEDDER, "prompt": TEXTS[1]}, headers=auth(key)
    )
    assert legacy.status_code == 200
    assert legacy.json() == {"embedding": expected(TEXTS[1])}
    empty_prompt = await stack.client.post(
        "/api/embeddings", json={"model": EMBEDDER, "prompt": ""}, headers=auth(key)
    )
    assert empty_prompt.json() == {"embedding": []}
    loaded = await stack.client.post(
        "/api/embed", json={"model": EMBEDDER, "input": []}, headers=auth(key)
    )
    assert loaded.status_code == 200
    assert loaded.json()["embeddings"] == []
    assert len(stack.engine.embedded) == 1  # loading runs nothing


async def test_ollama_show_and_tags_tell_an_embedding_model(stack: Stack) -> None:
    client = await ollama_client(stack)
    shown = await client.show("embed:small")
    assert shown.capabilities == ["embedding"]
    assert shown.modelinfo == {
        "general.architecture": "fake",
        "fake.context_length": MAX_CONTEXT,
        "fake.embedding_length": SIZE,
    }
    chat = await client.show(CHAT_MODEL)
    assert chat.capabilities == ["completion"]
    assert chat.modelinfo is not None
    assert "fake.embedding_length" not in chat.modelinfo
    listed = await client.list()
    assert sorted(m.model or "" for m in listed.models) == ["embed:small", "fake-model:latest"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/embed", {"model": EMBEDDER, "input": 5}, 400),
        ("/api/embed", {"model": EMBEDDER, "input": ["a", 1]}, 400),
        ("/api/embed", {"model": EMBEDDER, "input": "a", "dimensions": 4}, 400),
        ("/api/embed", {"model": EMBEDDER, "input": "a", "dimensions": 0}, 400),
        ("/api/embed", {"model": EMBEDDER, "input": "a", "options": {"bogus": 1}}, 400),
        ("/api/embed", {"input": "a"}, 400),
        ("/api/embed", {"model": "nope", "input": "a"}, 404),
        ("/api/embeddings", {"model": EMBEDDER, "prompt": ["a"]}, 400),
        ("/api/embeddings", {"model": "nope", "prompt": "a"}, 404),
    ],
)
async def test_ollama_bad_input_is_a_4xx_in_ollamas_shape(
    stack: Stack, path: str, body: dict[str, Any], status: int
) -> None:
    key = await stack.key()
    response = await stack.client.post(path, json=body, headers=auth(key))
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert isinstance(response.json()["error"], str)
    assert response.json()["error"]


@pytest.mark.parametrize("path", ["/v1/embeddings", "/api/embed", "/api/embeddings"])
async def test_no_key_is_a_401(stack: Stack, path: str) -> None:
    response = await stack.client.post(path, json={"model": EMBEDDER, "input": "a"})
    assert response.status_code == 401
    rows = await stack.audit_rows()
    assert [(r.event, r.endpoint) for r in rows] == [("refused", path)]
