"""OpenAI's ``tools`` and ``tool_choice``: checked here, as OpenAI checks them, then handed
to the worker (``Tools``), which renders them into the prompt and extracts the calls.

``required`` and a named function constrain decoding to JSON (vLLM's structured outputs), so
any model yields valid calls: ``required`` to an array of ``{"name", "parameters"}`` objects
(the schema vLLM's own server uses), a named function to that function's parameters.
``auto`` needs the model's own tool-call syntax, parsed by the worker's configured parser.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from gateway.errors import InvalidRequest
from gateway.queue.protocol import ChatMessage, ToolCall, Tools

MAX_TOOLS = 128  # OpenAI's limit
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


class FunctionIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: str
    function: FunctionIn


class NamedFunction(msgspec.Struct, frozen=True):
    name: str


class NamedToolChoice(msgspec.Struct, frozen=True):
    type: str
    function: NamedFunction


class FunctionCallIn(msgspec.Struct, frozen=True):
    name: str
    arguments: str


class ToolCallIn(msgspec.Struct, frozen=True):
    """An earlier assistant turn's call, as the client sends it back."""

    id: str
    function: FunctionCallIn
    type: str = "function"


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _decode(value: Any, type_: type[Any], param: str) -> Any:
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise _invalid(f"Invalid value for '{param}': {exc}", param) from None


def _checked_tools(tools: list[Any]) -> list[ToolIn]:
    if not tools:
        raise _invalid(
            "Invalid 'tools': empty array. Expected an array with at least 1 tool.", "tools"
        )
    if len(tools) > MAX_TOOLS:
        raise _invalid(f"Invalid 'tools': at most {MAX_TOOLS} tools are allowed.", "tools")
    checked: list[ToolIn] = []
    seen: set[str] = set()
    for index, raw in enumerate(tools):
        param = f"tools[{index}]"
        tool: ToolIn = _decode(raw, ToolIn, param)
        if tool.type != "function":
            raise _invalid(
                f"Invalid value for '{param}.type': only 'function' tools are supported.",
                f"{param}.type",
            )
        name = tool.function.name
        if not _NAME.match(name):
            raise _invalid(
                f"Invalid '{param}.function.name': string does not match pattern "
                "'^[a-zA-Z0-9_-]{1,64}$'.",
                f"{param}.function.name",
            )
        if name in seen:
            raise _invalid(f"Duplicate tool name '{name}' in 'tools'.", f"{param}.function.name")
        seen.add(name)
        if tool.function.parameters is not None:
            try:
                Draft202012Validator.check_schema(tool.function.parameters)
            except SchemaError as exc:
                raise _invalid(
                    f"Invalid schema for function '{name}': {exc.message}",
                    f"{param}.function.parameters",
                ) from None
        checked.append(tool)
    return checked


def _choice(value: Any, names: list[str]) -> tuple[str, bool]:
    """(choice, is_named) from OpenAI's ``tool_choice``."""
    if value is None:
        return "auto", False
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise _invalid(
                f"Invalid value for 'tool_choice': '{value}'. Supported values are: "
                "'none', 'auto', 'required', or an object naming a function.",
                "tool_choice",
            )
        return value, False
    named: NamedToolChoice = _decode(value, NamedToolChoice, "tool_choice")
    if named.type != "function":
        raise _invalid("Invalid value for 'tool_choice.type': expected 'function'.", "tool_choice")
    if named.function.name not in names:
        raise _invalid(
            f"Invalid value for 'tool_choice': function '{named.function.name}' is not "
            "among the 'tools'.",
            "tool_choice",
        )
    return named.function.name, True


def _from_legacy(functions: list[Any] | None, function_call: Any) -> tuple[list[Any], Any]:
    """The deprecated ``functions``/``function_call`` as ``tools``/``tool_choice``."""
    tools = [{"type": "function", "function": f} for f in functions or []]
    if function_call is None or isinstance(function_call, str):
        return tools, function_call
    return tools, {"type": "function", "function": function_call}


def tools_of(
    tools: list[Any] | None,
    tool_choice: Any,
    *,
    parallel_tool_calls: bool | None = None,
    functions: list[Any] | None = None,
    function_call: Any = None,
) -> tuple[Tools | None, str | None]:
    """(what the worker gets, the JSON Schema decoding must follow) for a request's tools.

    No tools, or ``tool_choice: "none"``: the model answers in text, tools still shown to it.
    """
    if functions is not None or function_call is not None:
        if tools is not None or tool_choice is not None:
            raise _invalid(
                "Use either 'tools'/'tool_choice' or the deprecated 'functions'/"
                "'function_call', not both.",
                "functions",
            )
        tools, tool_choice = _from_legacy(functions, function_call)
        if not tools:
            tools = None
    if tools is None:
        if tool_choice is not None:
            raise _invalid(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                "are specified.",
                "tool_choice",
            )
        return None, None
    checked = _checked_tools(tools)
    names = [t.function.name for t in checked]
    choice, is_named = _choice(tool_choice, names)
    functions_json = msgspec.json.encode(checked).decode()
    offered = Tools(functions=functions_json, choice=choice, is_named=is_named)
    return offered, constraint(checked, choice, is_named, parallel_tool_calls)


def constraint(
    tools: list[ToolIn], choice: str, is_named: bool, parallel_tool_calls: bool | None
) -> str | None:
    """The JSON Schema of the answer when tool calls are forced, else None."""
    if is_named:
        function = next(t.function for t in tools if t.function.name == choice)
        return json.dumps(function.parameters or _EMPTY_OBJECT)
    if choice != "required":
        return None
    calls = [
        {
            "properties": {
                "name": {"type": "string", "enum": [t.function.name]},
                "parameters": t.function.parameters or _EMPTY_OBJECT,
            },
            "required": ["name", "parameters"],
        }
        for t in tools
    ]
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "object", "anyOf": calls},
    }
    if parallel_tool_calls is False:
        schema["maxItems"] = 1
    return json.dumps(schema)


def assistant_tool_calls(value: Any, param: str) -> tuple[ToolCall, ...]:
    """An assistant message's ``tool_calls`` as sent back by the client."""
    if value is None:
        return ()
    calls: list[ToolCallIn] = _decode(value, list[ToolCallIn], param)
    return tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in calls)


def tool_message(message: ChatMessage, index: int) -> ChatMessage:
    """A ``tool`` turn must say which call it answers."""
    if message.role == "tool" and not message.tool_call_id:
        raise _invalid(
            f"Missing required parameter: 'messages[{index}].tool_call_id'.",
            f"messages[{index}].tool_call_id",
        )
    return message
