"""Ollama requests into Enclave's, and Enclave's answers into Ollama's shapes.

Model names: an operator maps Ollama names (``name:tag``) to Enclave model names with
``ENCLAVE_OLLAMA__ALIASES``; a name that is not an alias is the Enclave name, with
``:latest`` (Ollama's default tag) taken off.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from gateway.api.logprobs import token_logprobs
from gateway.api.structured import ollama_format
from gateway.api.tools import tools_of
from gateway.errors import InvalidRequest
from gateway.inference import InferenceRequest, JobRun
from gateway.queue.protocol import (
    ChatMessage,
    SamplingOptions,
    TokenLogprob,
    ToolCall,
    new_call_id,
)
from gateway.schemas.ollama import (
    ChatRequest,
    Final,
    FunctionCall,
    GenerateRequest,
    Message,
    Options,
)
from gateway.schemas.ollama import ToolCall as OllamaToolCall

LATEST = ":latest"
ROLES = frozenset({"system", "user", "assistant", "tool"})
# Ollama's options vLLM has no counterpart for, with the value that means "off".
NEUTRAL = {
    "mirostat": 0,
    "tfs_z": 1.0,
    "typical_p": 1.0,
}
# Ollama reports "stop" after tool calls too.
OLLAMA_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop"}
UNSUPPORTED = ("mirostat_tau", "mirostat_eta", "repeat_last_n", "penalize_newline")


def enclave_name(name: str, aliases: Mapping[str, str]) -> str:
    if name in aliases:
        return aliases[name]
    if ":" not in name and name + LATEST in aliases:
        return aliases[name + LATEST]
    return name.removesuffix(LATEST)


def ollama_names(model: str, aliases: Mapping[str, str]) -> list[str]:
    """What ``/api/tags`` lists for an Enclave model: its aliases, or ``<model>:latest``."""
    named = sorted(alias for alias, target in aliases.items() if target == model)
    return named or [model if ":" in model else model + LATEST]


def timestamp(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat().replace("+00:00", "Z")


MAX_TOP_LOGPROBS = 20  # Ollama's limit


def logprobs_of(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """The alternatives per token to report (None: no logprobs), as Ollama reads the two."""
    if top_logprobs is not None and not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(
            f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs"
        )
    return (top_logprobs or 0) if logprobs else None


def ollama_logprobs(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """Ollama's ``logprobs``: the same fields as OpenAI chat's (token, logprob, bytes,
    top_logprobs)."""
    builtins: list[dict[str, Any]] = msgspec.to_builtins(token_logprobs(entries))
    return builtins


def sampling(
    options: Options | None, format_: object = None, logprobs: int | None = None
) -> SamplingOptions:
    """Ollama's options (and ``format``, and the logprobs wanted) as OpenAI-style sampling;
    an option vLLM cannot honour is a 400."""
    structured = ollama_format(format_)
    if options is None:
        return SamplingOptions(logprobs=logprobs, **structured)
    for name, neutral in NEUTRAL.items():
        value = getattr(options, name)
        if value is not None and value != neutral:
            raise InvalidRequest(f"option {name} is not supported by this server", param=name)
    for name in UNSUPPORTED:
        if getattr(options, name) is not None:
            raise InvalidRequest(f"option {name} is not supported by this server", param=name)
    stop = (options.stop,) if isinstance(options.stop, str) else tuple(options.stop or ())
    # num_predict -1 (until the model stops) and -2 (fill the context): no limit of our own.
    predict = options.num_predict
    if predict is not None and predict < -2:
        raise InvalidRequest("num_predict must be -2, -1 or a positive number", param="num_predict")
    return SamplingOptions(
        max_tokens=predict if predict is not None and predict >= 0 else None,
        max_tokens_is_cap=True,  # Ollama stops where the context ends, it never refuses
        logprobs=logprobs,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        min_p=options.min_p,
        seed=options.seed,
        stop=stop,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        repetition_penalty=options.repeat_penalty,
        **structured,
    )


def refuse_unsupported(**fields: object) -> None:
    for name, value in fields.items():
        if value not in (None, [], ""):
            raise InvalidRequest(f"{name} is not supported by this server yet", param=name)


def sent_tool_calls(calls: list[Any] | None) -> tuple[ToolCall, ...]:
    """An assistant turn's ``tool_calls`` as Ollama clients send them back (arguments as an
    object, the id optional)."""
    converted = []
    for raw in calls or []:
        function = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(
                "invalid tool call: expected a function with a name", param="messages"
            )
        arguments = function.get("arguments", {})
        if not isinstance(arguments, dict):
            raise InvalidRequest("invalid tool call: arguments must be an object", param="messages")
        call_id = raw.get("id") or new_call_id()
        converted.append(ToolCall(str(call_id), function["name"], json.dumps(arguments)))
    return tuple(converted)


def chat_message(message: Message) -> ChatMessage:
    if message.role not in ROLES:
        raise InvalidRequest(f"invalid role: {message.role}", param="messages")
    refuse_unsupported(images=message.images)
    return ChatMessage(
        role=message.role,
        content=message.content,
        tool_calls=sent_tool_calls(message.tool_calls),
        name=message.tool_name,
    )


def refuse_thinking(think: object, model: str) -> None:
    """Ollama's ``think`` (true, or an effort such as "high") needs a thinking model; none of
    the models served here separates its thoughts, so asking is a 400, as Ollama answers."""
    if think not in (None, False):
        raise InvalidRequest(f'"{model}" does not support thinking', param="think")


def chat_request(body: ChatRequest, endpoint: str, model: str) -> InferenceRequest:
    refuse_thinking(body.think, body.model)
    # Ollama's choice is always "auto"; its clients send "tools": [] for none.
    tools, _ = tools_of(body.tools or None, None)
    return InferenceRequest(
        endpoint=endpoint,
        model=model,
        kind="chat",
        sampling=sampling(body.options, body.format, logprobs_of(body.logprobs, body.top_logprobs)),
        messages=tuple(chat_message(m) for m in body.messages),
        tools=tools,
    )


def ollama_tool_calls(calls: list[ToolCall]) -> tuple[list[OllamaToolCall], str]:
    """The calls in Ollama's shape, and as text any whose arguments are not a JSON object
    (cut off by num_predict)."""
    converted, unparsed = [], ""
    for call in calls:
        try:
            arguments = json.loads(call.arguments)
        except ValueError:
            arguments = None
        if isinstance(arguments, dict):
            converted.append(OllamaToolCall(FunctionCall(call.name, arguments)))
        else:
            unparsed += call.arguments
    return converted, unparsed


def generate_request(body: GenerateRequest, endpoint: str, model: str) -> InferenceRequest:
    """A completion of the prompt as it is (``raw``), or filling in before ``suffix`` in
    the model's own FIM prompt (a 400 where it has none); else a one-turn chat."""
    refuse_thinking(body.think, body.model)
    refuse_unsupported(images=body.images, template=body.template, context=body.context)
    options = sampling(body.options, body.format, logprobs_of(body.logprobs, body.top_logprobs))
    if body.suffix or body.raw:
        return InferenceRequest(
            endpoint=endpoint,
            model=model,
            kind="completion",
            sampling=options,
            prompt=body.prompt,
            suffix=body.suffix or None,
        )
    messages = [ChatMessage("system", body.system)] if body.system else []
    messages.append(ChatMessage("user", body.prompt))
    return InferenceRequest(
        endpoint=endpoint, model=model, kind="chat", sampling=options, messages=tuple(messages)
    )


@dataclass
class Clock:
    """Ollama's durations: from the request's arrival, to the first token, to the end."""

    started: float = field(default_factory=time.perf_counter)

    def final(self, run: JobRun) -> Final:
        end = time.perf_counter()
        first = run.first_token_at or end
        return Final(
            done_reason=OLLAMA_REASONS.get(run.finish_reason or "stop", "stop"),
            total_duration=nanoseconds(end - self.started),
            load_duration=0,  # models stay loaded in their workers
            prompt_eval_count=run.prompt_tokens,
            prompt_eval_duration=nanoseconds(first - self.started),
            eval_count=run.completion_tokens,
            eval_duration=nanoseconds(end - first),
        )


def nanoseconds(seconds: float) -> int:
    return max(0, int(seconds * 1e9))
