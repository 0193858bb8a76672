"""Tool calls on the real worker, through the openai SDK: ``required`` and a named function
constrain decoding, so even the small demo model (whose template knows no tools) yields
calls whose arguments validate against the function's schema."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.e2e.conftest import Cluster
from tests.processes import DEMO_MODEL

pytestmark = pytest.mark.e2e

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 30}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The current time in a timezone.",
            "parameters": TIME,
        },
    },
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
QUESTION: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_required_yields_calls_whose_arguments_match_the_schema(cluster: Cluster) -> None:
    completion = cluster.client().chat.completions.create(
        model=DEMO_MODEL,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice="required",
        temperature=0,
        max_tokens=150,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls
    for call in calls:
        assert call.type == "function"
        assert call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_a_named_function_is_called_and_streamed_like_openai(cluster: Cluster) -> None:
    stream = cluster.client().chat.completions.create(
        model=DEMO_MODEL,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=150,
        stream=True,
    )
    pieces = []
    finish_reasons = []
    for chunk in stream:
        for choice in chunk.choices:
            pieces.extend(choice.delta.tool_calls or [])
            assert not choice.delta.content  # the whole answer is the call
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
    first, *rest = pieces
    assert first.index == 0
    assert first.id
    assert first.type == "function"
    assert first.function is not None
    assert first.function.name == "get_weather"
    assert rest  # the arguments arrive in pieces, as the model writes them
    assert all(p.id is None and p.index == 0 and p.function for p in rest)
    arguments = (first.function.arguments or "") + "".join(
        p.function.arguments or "" for p in rest if p.function
    )
    jsonschema.validate(json.loads(arguments), WEATHER)
    assert finish_reasons == ["stop"]  # OpenAI's finish reason for a forced function


def test_required_streams_each_call_with_its_id_and_name(cluster: Cluster) -> None:
    stream = cluster.client().chat.completions.create(
        model=DEMO_MODEL,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=150,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish_reasons = []
    for chunk in stream:
        for choice in chunk.choices:
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += piece.id or ""
                call["name"] += (piece.function.name or "") if piece.function else ""
                call["arguments"] += (piece.function.arguments or "") if piece.function else ""
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
    assert list(calls) == [0]  # parallel_tool_calls=False: exactly one call
    assert calls[0]["id"].startswith("call_")
    jsonschema.validate(json.loads(calls[0]["arguments"]), SCHEMAS[calls[0]["name"]])
    assert finish_reasons == ["tool_calls"]


def test_the_tool_result_goes_back_and_the_model_answers(cluster: Cluster) -> None:
    client = cluster.client()
    first = client.chat.completions.create(
        model=DEMO_MODEL,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=150,
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    followup = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    answer = client.chat.completions.create(
        model=DEMO_MODEL, messages=followup, tools=TOOLS, tool_choice="none", max_tokens=20
    )
    assert answer.choices[0].message.content
    assert answer.choices[0].message.tool_calls is None
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens  # type: ignore[union-attr]


def test_auto_without_a_parser_is_a_clear_400(cluster: Cluster) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        cluster.client().chat.completions.create(model=DEMO_MODEL, messages=QUESTION, tools=TOOLS)
    body: Any = caught.value.body
    assert body["param"] == "tool_choice"
    assert "TOOL_CALL_PARSER" in body["message"]


def test_the_audit_outcome_keeps_the_calls(cluster: Cluster) -> None:
    response = cluster.client().chat.completions.with_raw_response.create(
        model=DEMO_MODEL,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice="required",
        temperature=0,
        max_tokens=150,
    )
    request_id = response.headers["x-request-id"]
    calls = response.parse().choices[0].message.tool_calls or []
    answer = {
        "content": "",
        "tool_calls": [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in calls
        ],
    }
    kept = json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
    outcome = [r for r in cluster.audit_rows(request_id) if r.event == "outcome"]
    assert [r.finish_reason for r in outcome] == ["tool_calls"]
    assert outcome[0].answer_sha256 == hashlib.sha256(kept).hexdigest()
