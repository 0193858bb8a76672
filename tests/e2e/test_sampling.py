"""``n`` and log probabilities on the real worker, through the openai SDK and the ollama
client."""

from __future__ import annotations

import math

import ollama
import pytest

from tests.e2e.conftest import Cluster
from tests.processes import DEMO_MODEL

pytestmark = pytest.mark.e2e

STORY = [{"role": "user", "content": "Tell me a short story about a lighthouse."}]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_n_samples_several_answers_in_one_request(cluster: Cluster) -> None:
    completion = cluster.client().chat.completions.create(
        model=DEMO_MODEL, messages=STORY, n=3, temperature=1.0, seed=7, max_tokens=16
    )
    texts = [c.message.content for c in completion.choices]
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(texts)
    assert len(set(texts)) > 1  # sampled independently
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 48  # 16 each, none stopped early


def test_greedy_logprobs_rank_the_sampled_token_first(cluster: Cluster) -> None:
    completion = cluster.client().chat.completions.create(
        model=DEMO_MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=12,
        logprobs=True,
        top_logprobs=3,
    )
    choice = completion.choices[0]
    assert choice.logprobs is not None
    entries = choice.logprobs.content or []
    assert "".join(e.token for e in entries) == choice.message.content
    assert completion.usage is not None
    assert choice.finish_reason == "stop"  # the end-of-turn token: counted, not shown
    assert len(entries) == completion.usage.completion_tokens - 1
    for entry in entries:
        assert len(entry.top_logprobs) == 3
        best = entry.top_logprobs[0]
        assert (best.token, best.logprob) == (entry.token, entry.logprob)  # greedy
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
        assert sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1.0 + 1e-4


def test_legacy_completion_logprobs(cluster: Cluster) -> None:
    completion = cluster.client().completions.create(
        model=DEMO_MODEL, prompt="The capital of France is", temperature=0, max_tokens=5, logprobs=2
    )
    choice = completion.choices[0]
    assert choice.logprobs is not None
    tokens = choice.logprobs.tokens or []
    assert "".join(tokens) == choice.text
    assert len(choice.logprobs.token_logprobs or []) == len(tokens) == 5
    for token, logprob, top in zip(
        tokens,
        choice.logprobs.token_logprobs or [],
        choice.logprobs.top_logprobs or [],
        strict=True,
    ):
        assert logprob <= 0
        assert top[token] == logprob  # greedy: the sampled token is among the top two


def test_ollama_logprobs_on_the_real_worker(cluster: Cluster) -> None:
    client = ollama.Client(
        host=cluster.base_url, headers={"Authorization": f"Bearer {cluster.api_key}"}
    )
    answer = client.chat(
        model=DEMO_MODEL,
        messages=QUESTION,
        options={"temperature": 0, "num_predict": 10},
        logprobs=True,
        top_logprobs=2,
    )
    assert answer.logprobs
    assert "".join(e.token for e in answer.logprobs) == answer.message.content
    for entry in answer.logprobs:
        best = (entry.top_logprobs or [])[0]
        assert (best.token, best.logprob) == (entry.token, entry.logprob)  # greedy
