"""Tools and tool_choice through the gateway and queue, with the openai SDK and the ollama
client: what reaches the worker, how calls come back (whole and streamed), and every bad
request a 400 in its dialect. The fake engine reads calls like VllmEngine does; its "model"
answers in Hermes' ``<tool_call>`` syntax when offered tools. The real model is in
tests/e2e/test_tools.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import ollama
import openai
import pytest
from redis.asyncio import Redis

from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack
from workers.engine import ChatPrompt, Prompt

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The time now."}},
]
QUESTION: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
ARGUMENTS = {"city": "Paris"}


def reply(prompt: Prompt) -> str:
    """The fake model: the call in the shape each tool choice decodes to."""
    tools = prompt.tools if isinstance(prompt, ChatPrompt) else None
    if tools is None or tools.choice == "none":
        return "It is sunny in Paris."
    if tools.is_named:
        return json.dumps(ARGUMENTS)
    if tools.choice == "required":
        return json.dumps([{"name": "get_weather", "parameters": ARGUMENTS}])
    call = json.dumps({"name": "get_weather", "arguments": ARGUMENTS})
    return f"Let me look. <tool_call>{call}</tool_call>"


@pytest.fixture
def has_tool_parser() -> bool:
    return True


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    redis_client: Redis,
    has_tool_parser: bool,
) -> AsyncIterator[Stack]:
    engine = FakeEngine(reply=reply, has_tool_parser=has_tool_parser)
    async with open_stack(make_postgres_url(), redis_url, engine) as opened:
        yield opened


async def openai_client(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{str(stack.client.base_url).rstrip('/')}/v1",
        api_key=await stack.key(),
        max_retries=0,
    )


def offered(stack: Stack) -> tuple[Any, Any]:
    """(tools, sampling) of the one job the worker ran."""
    [(_, prompt, sampling)] = stack.engine.requests
    assert isinstance(prompt, ChatPrompt)
    return prompt.tools, sampling


async def test_required_constrains_decoding_to_an_array_of_calls(stack: Stack) -> None:
    client = await openai_client(stack)
    completion = await client.chat.completions.create(
        model="fake-model", messages=QUESTION, tools=TOOLS, tool_choice="required"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGUMENTS
    tools, sampling = offered(stack)
    assert tools.choice == "required"
    assert [t["function"]["name"] for t in json.loads(tools.functions)] == [
        "get_weather",
        "get_time",
    ]
    schema = json.loads(sampling.json_schema)
    assert schema["type"] == "array"
    assert schema["minItems"] == 1
    assert "maxItems" not in schema
    names = [s["properties"]["name"]["enum"] for s in schema["items"]["anyOf"]]
    assert names == [["get_weather"], ["get_time"]]
    params = [s["properties"]["parameters"] for s in schema["items"]["anyOf"]]
    assert params == [WEATHER, {"type": "object", "properties": {}}]


async def test_no_parallel_calls_allows_one(stack: Stack) -> None:
    client = await openai_client(stack)
    await client.chat.completions.create(
        model="fake-model",
        messages=QUESTION,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
    )
    _, sampling = offered(stack)
    assert json.loads(sampling.json_schema)["maxItems"] == 1


async def test_a_named_function_decodes_to_its_parameters_and_streams(stack: Stack) -> None:
    client = await openai_client(stack)
    stream = await client.chat.completions.create(
        model="fake-model",
        messages=QUESTION,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_object"},  # the call's schema takes its place
        stream=True,
    )
    pieces, reasons = [], []
    async for chunk in stream:
        for choice in chunk.choices:
            pieces.extend(choice.delta.tool_calls or [])
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    first, *rest = pieces
    assert first.id
    assert first.type == "function"
    assert first.function
    assert first.function.name == "get_weather"
    assert rest
    assert all(p.id is None and p.function and p.function.name is None for p in rest)
    arguments = "".join((p.function.arguments or "") for p in pieces if p.function)
    assert json.loads(arguments) == ARGUMENTS
    assert reasons == ["stop"]
    _, sampling = offered(stack)
    assert json.loads(sampling.json_schema) == WEATHER
    assert sampling.json_object is False


async def test_auto_reads_the_models_own_syntax(stack: Stack) -> None:
    client = await openai_client(stack)
    completion = await client.chat.completions.create(
        model="fake-model", messages=QUESTION, tools=TOOLS
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look. "
    [call] = choice.message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", ARGUMENTS)
    tools, sampling = offered(stack)
    assert tools.choice == "auto"
    assert sampling.json_schema is None


async def test_auto_streams_text_then_calls(stack: Stack) -> None:
    client = await openai_client(stack)
    stream = await client.chat.completions.create(
        model="fake-model", messages=QUESTION, tools=TOOLS, stream=True
    )
    text, calls, reasons = "", [], []
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            calls.extend(choice.delta.tool_calls or [])
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert text == "Let me look. "
    assert [(c.index, c.function.name if c.function else None) for c in calls] == [
        (0, "get_weather")
    ]
    assert reasons == ["tool_calls"]


async def test_none_answers_in_text_with_the_tools_still_shown(stack: Stack) -> None:
    client = await openai_client(stack)
    completion = await client.chat.completions.create(
        model="fake-model", messages=QUESTION, tools=TOOLS, tool_choice="none"
    )
    assert completion.choices[0].message.content == "It is sunny in Paris."
    assert completion.choices[0].message.tool_calls is None
    tools, sampling = offered(stack)
    assert tools.choice == "none"
    assert sampling.json_schema is None


async def test_a_conversation_with_tool_results_reaches_the_worker(stack: Stack) -> None:
    client = await openai_client(stack)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages: list[Any] = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees"},
    ]
    await client.chat.completions.create(
        model="fake-model", messages=messages, tools=TOOLS, tool_choice="none"
    )
    [(_, prompt, _)] = stack.engine.requests
    assert isinstance(prompt, ChatPrompt)
    assistant, tool = prompt.messages[1:]
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [
        ("call_1", "get_weather", '{"city": "Paris"}')
    ]
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_1", "21 degrees")


@pytest.mark.parametrize("has_tool_parser", [False])
async def test_auto_without_a_parser_is_a_400(stack: Stack) -> None:
    client = await openai_client(stack)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="fake-model", messages=QUESTION, tools=TOOLS)
    body: Any = caught.value.body
    assert body["param"] == "tool_choice"


def named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": []}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"tools": [{"type": "code", "function": {"name": "f"}}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
        ({"tools": [TOOLS[0], TOOLS[0]]}, "tools[1].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [TOOLS[0]] * 129}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": named("missing")}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice"),
        ({"tools": TOOLS, "functions": [TOOLS[0]["function"]]}, "functions"),
        (
            {"messages": [{"role": "tool", "content": "21 degrees"}]},
            "messages[0].tool_call_id",
        ),
        (
            {"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "x"}]}]},
            "messages[0].tool_calls",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "hi",
                        "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            "messages[0].tool_calls",
        ),
    ],
)
async def test_bad_tools_are_a_400_naming_the_field(
    stack: Stack, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "fake-model", "messages": QUESTION, **extra}
    key = await stack.key()
    response = await stack.client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert stack.engine.requests == []


async def test_the_deprecated_functions_are_tools(stack: Stack) -> None:
    key = await stack.key()
    body = {
        "model": "fake-model",
        "messages": QUESTION,
        "functions": [TOOLS[0]["function"]],
        "function_call": {"name": "get_weather"},
    }
    response = await stack.client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    [call] = response.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"


async def ollama_client(stack: Stack) -> ollama.AsyncClient:
    headers = {"Authorization": f"Bearer {await stack.key()}"}
    return ollama.AsyncClient(host=str(stack.client.base_url), headers=headers)


async def test_ollama_chat_with_tools_answers_calls_as_objects(stack: Stack) -> None:
    client = await ollama_client(stack)
    response = await client.chat(model="fake-model", messages=QUESTION, tools=TOOLS, stream=False)
    [call] = response.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert dict(call.function.arguments) == ARGUMENTS  # an object, as Ollama sends it
    assert response.done_reason == "stop"  # Ollama says stop after calls too
    tools, _ = offered(stack)
    assert tools.choice == "auto"


async def test_ollama_chat_streams_the_calls_in_a_piece_of_their_own(stack: Stack) -> None:
    client = await ollama_client(stack)
    pieces = [
        piece
        async for piece in await client.chat(
            model="fake-model", messages=QUESTION, tools=TOOLS, stream=True
        )
    ]
    with_calls = [p for p in pieces if p.message.tool_calls]
    assert len(with_calls) == 1
    assert not with_calls[0].done
    assert pieces[-1].done
    assert pieces[-1].done_reason == "stop"
    assert "".join(p.message.content or "" for p in pieces) == "Let me look. "


async def test_ollama_sends_tool_results_back(stack: Stack) -> None:
    client = await ollama_client(stack)
    messages: list[Any] = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": ARGUMENTS}}],
        },
        {"role": "tool", "content": "21 degrees", "tool_name": "get_weather"},
    ]
    await client.chat(model="fake-model", messages=messages, tools=TOOLS, stream=False)
    [(_, prompt, _)] = stack.engine.requests
    assert isinstance(prompt, ChatPrompt)
    assistant, tool = prompt.messages[1:]
    [call] = assistant.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("get_weather", ARGUMENTS)
    assert (tool.role, tool.name, tool.content) == ("tool", "get_weather", "21 degrees")


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{"type": "function", "function": {"name": "a b"}}]},
        {"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]},
    ],
)
async def test_ollama_bad_tools_are_a_400_in_ollamas_shape(
    stack: Stack, extra: dict[str, Any]
) -> None:
    key = await stack.key()
    body = {"model": "fake-model", "messages": QUESTION, **extra}
    response = await stack.client.post(
        "/api/chat", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    assert stack.engine.requests == []


@pytest.mark.parametrize("has_tool_parser", [True, False])
async def test_api_show_reports_tools_only_with_a_parser(
    stack: Stack, has_tool_parser: bool
) -> None:
    client = await ollama_client(stack)
    shown = await client.show("fake-model")
    assert ("tools" in (shown.capabilities or [])) is has_tool_parser
