"""Embeddings for real: openai SDK, ollama client and httpx → gateway → Redis → a vLLM
worker running all-MiniLM-L6-v2 as a pooling model (the demo embedding model)."""

from __future__ import annotations

import base64
import math
import struct
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tests.e2e.conftest import Cluster
from tests.processes import DEMO_MODEL, EMBEDDING_MODEL
from workers.models import model_digest

pytestmark = pytest.mark.e2e

CAT = "The cat sits on the mat."
FELINE = "A feline rests on a rug."
REVENUE = "Quarterly revenue grew 5%."
DIMENSIONS = 384


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def reference_vectors(model_path: Path, texts: list[str]) -> list[list[float]]:
    """Computed here without vLLM: the model's mean pooling, normalized (sentence-transformers'
    recipe for all-MiniLM-L6-v2)."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).tolist()  # type: ignore[no-any-return]


def token_count(model_path: Path, texts: list[str]) -> int:
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return sum(len(tokenizer(text)["input_ids"]) for text in texts)


def test_similar_sentences_are_close_and_usage_is_the_token_count(
    cluster: Cluster, embedding_model: Path
) -> None:
    texts = [CAT, FELINE, REVENUE]
    response = cluster.client().embeddings.create(
        model=EMBEDDING_MODEL, input=texts, encoding_format="float"
    )
    vectors = [d.embedding for d in response.data]
    assert [d.index for d in response.data] == [0, 1, 2]
    assert [len(v) for v in vectors] == [DIMENSIONS] * 3
    close, far = cosine(vectors[0], vectors[1]), cosine(vectors[0], vectors[2])
    print(f"cosine cat/feline {close:.4f}, cat/revenue {far:.4f}")
    assert close > 0.45
    assert far < 0.15
    assert close - far > 0.3
    for ours, theirs in zip(vectors, reference_vectors(embedding_model, texts), strict=True):
        assert cosine(ours, theirs) > 0.999  # the same model, the same pooling
        assert math.isclose(math.fsum(x * x for x in ours), 1.0, rel_tol=1e-4)
    assert response.usage.prompt_tokens == token_count(embedding_model, texts)
    assert response.usage.total_tokens == response.usage.prompt_tokens


def test_base64_decodes_to_the_float_vectors(cluster: Cluster, embedding_model: Path) -> None:
    body = {"model": EMBEDDING_MODEL, "input": [CAT, REVENUE]}
    headers = {"Authorization": f"Bearer {cluster.api_key}"}
    with httpx.Client(base_url=cluster.base_url, timeout=60) as http:
        as_floats = http.post(
            "/v1/embeddings", json=body | {"encoding_format": "float"}, headers=headers
        )
        as_base64 = http.post(
            "/v1/embeddings", json=body | {"encoding_format": "base64"}, headers=headers
        )
    assert as_floats.status_code == as_base64.status_code == 200
    for plain, packed in zip(as_floats.json()["data"], as_base64.json()["data"], strict=True):
        raw = base64.b64decode(packed["embedding"])
        assert len(raw) == 4 * DIMENSIONS  # little-endian float32, as OpenAI sends it
        assert list(struct.unpack(f"<{DIMENSIONS}f", raw)) == plain["embedding"]
    sdk = cluster.client().embeddings.create(model=EMBEDDING_MODEL, input=CAT)  # base64 inside
    assert sdk.data[0].embedding == as_floats.json()["data"][0]["embedding"]


def test_an_embeddings_request_is_audited(cluster: Cluster, embedding_model: Path) -> None:
    raw = cluster.client().embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input=CAT)
    request_id = raw.headers["x-request-id"]
    usage = raw.parse().usage
    rows = cluster.audit_rows(request_id)
    assert [(r.event, r.status) for r in rows] == [("accepted", 202), ("outcome", 200)]
    outcome = rows[1]
    assert (outcome.endpoint, outcome.model) == ("/v1/embeddings", EMBEDDING_MODEL)
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (usage.prompt_tokens, 0)
    assert outcome.weights_digest == model_digest(embedding_model)


def test_the_ollama_client_embeds(cluster: Cluster, embedding_model: Path) -> None:
    client = ollama.Client(
        host=cluster.base_url, headers={"Authorization": f"Bearer {cluster.api_key}"}
    )
    response = client.embed(model=f"{EMBEDDING_MODEL}:latest", input=[CAT, FELINE])
    assert response.model == f"{EMBEDDING_MODEL}:latest"
    assert [len(e) for e in response.embeddings] == [DIMENSIONS] * 2
    assert cosine(list(response.embeddings[0]), list(response.embeddings[1])) > 0.45
    assert response.prompt_eval_count == token_count(embedding_model, [CAT, FELINE])
    long = client.embed(model=EMBEDDING_MODEL, input="word " * 400)  # cut to the context
    assert long.prompt_eval_count == 256
    shown = client.show(EMBEDDING_MODEL)
    assert shown.capabilities == ["embedding"]
    assert shown.modelinfo == {
        "general.architecture": "bert",
        "bert.context_length": 256,
        "bert.embedding_length": DIMENSIONS,
    }
    assert client.show(DEMO_MODEL).capabilities == ["completion"]
    names = sorted(m.model or "" for m in client.list().models)
    assert names == [f"{EMBEDDING_MODEL}:latest", f"{DEMO_MODEL}:latest"]


def test_ollamas_older_embeddings_call(cluster: Cluster, embedding_model: Path) -> None:
    headers = {"Authorization": f"Bearer {cluster.api_key}"}
    with httpx.Client(base_url=cluster.base_url, timeout=60) as http:
        response = http.post(
            "/api/embeddings", json={"model": EMBEDDING_MODEL, "prompt": CAT}, headers=headers
        )
        reference = http.post(
            "/api/embed", json={"model": EMBEDDING_MODEL, "input": CAT}, headers=headers
        )
    assert response.status_code == 200
    assert list(response.json()) == ["embedding"]
    assert response.json()["embedding"] == reference.json()["embeddings"][0]


def test_bad_input_and_the_wrong_model_are_400s_in_each_dialect(
    cluster: Cluster, embedding_model: Path
) -> None:
    client = cluster.client()
    with pytest.raises(openai.BadRequestError) as no_matryoshka:
        client.embeddings.create(model=EMBEDDING_MODEL, input=CAT, dimensions=128)
    assert "Matryoshka" in no_matryoshka.value.message
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model=EMBEDDING_MODEL, input="word " * 400)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model=EMBEDDING_MODEL, input=[])
    assert empty.value.param == "input"
    with pytest.raises(openai.BadRequestError) as chat_model:
        client.embeddings.create(model=DEMO_MODEL, input=CAT)
    assert chat_model.value.code == "model_not_supported"
    with pytest.raises(openai.BadRequestError) as embedder:
        client.chat.completions.create(
            model=EMBEDDING_MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert embedder.value.code == "model_not_supported"
    headers = {"Authorization": f"Bearer {cluster.api_key}"}
    with httpx.Client(base_url=cluster.base_url, timeout=60) as http:
        for path, body in [
            ("/api/embed", {"model": EMBEDDING_MODEL, "input": [1, 2]}),
            ("/api/embed", {"model": EMBEDDING_MODEL, "input": "x " * 400, "truncate": False}),
            ("/api/embed", {"model": DEMO_MODEL, "input": CAT}),
            ("/api/embeddings", {"model": EMBEDDING_MODEL, "prompt": 7}),
        ]:
            response = http.post(path, json=body, headers=headers)
            assert response.status_code == 400, (path, body, response.text)
            assert set(response.json()) == {"error"}
