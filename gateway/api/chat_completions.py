"""POST /v1/chat/completions — OpenAI's chat API, streaming and not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.response import Stream

from gateway.api import sse
from gateway.api.intake import Gate, abandon_unless_settled, admit, collect
from gateway.api.logprobs import chat_choice_logprobs, chat_logprobs
from gateway.api.sampling import sampling_options
from gateway.api.structured import response_format
from gateway.api.tools import assistant_tool_calls, tool_message, tools_of
from gateway.errors import EnclaveError, InvalidRequest
from gateway.inference import InferenceRequest, JobRun, service_tier_of
from gateway.queue.protocol import ChatMessage, ToolCall, ToolCallDelta
from gateway.schemas.chat_completions import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    Choice,
    ChunkChoice,
    ChunkDelta,
    FunctionCall,
    FunctionCallDelta,
    ToolCallChunk,
    ToolCallOut,
    Usage,
)

ENDPOINT = "/v1/chat/completions"


def flatten_content(message: ChatMessageIn, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise InvalidRequest(
                f"Content parts of type `{part.type}` are not supported by this model.",
                param=f"messages[{index}].content",
            )
        texts.append(part.text)
    return "".join(texts)


def chat_message(message: ChatMessageIn, index: int) -> ChatMessage:
    calls = assistant_tool_calls(message.tool_calls, f"messages[{index}].tool_calls")
    if calls and message.role != "assistant":
        raise InvalidRequest(
            f"Only assistant messages may carry tool_calls (messages[{index}].role is "
            f"'{message.role}').",
            param=f"messages[{index}].tool_calls",
        )
    converted = ChatMessage(
        role=message.role,
        content=flatten_content(message, index),
        tool_calls=calls,
        tool_call_id=message.tool_call_id,
        name=message.name,
    )
    return tool_message(converted, index)


def to_inference_request(body: ChatCompletionRequest) -> InferenceRequest:
    logprobs = chat_logprobs(body.logprobs, body.top_logprobs)
    tools, forced = tools_of(
        body.tools,
        body.tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        functions=body.functions,
        function_call=body.function_call,
    )
    messages = tuple(chat_message(m, i) for i, m in enumerate(body.messages))
    if body.n > 1 and tools is not None and tools.choice != "none":
        raise InvalidRequest(
            "`n` above 1 with tools is not supported by this server yet.", param="n"
        )
    max_tokens = body.max_completion_tokens or body.max_tokens
    sampling = msgspec.structs.replace(
        sampling_options(body, max_tokens=max_tokens), n=body.n, logprobs=logprobs
    )
    # Forced tool calls decode to their schema, in place of any response_format (as vLLM).
    structured = (
        {"json_schema": forced, "json_object": False}
        if forced is not None
        else response_format(body.response_format)
    )
    return InferenceRequest(
        endpoint=ENDPOINT,
        model=body.model,
        kind="chat",
        sampling=msgspec.structs.replace(sampling, **structured),
        messages=messages,
        service_tier=body.service_tier,
        tools=tools,
    )


def tool_call_chunks(parts: tuple[ToolCallDelta, ...]) -> list[ToolCallChunk] | None:
    """The worker's tool-call pieces framed as OpenAI's stream chunks."""
    if not parts:
        return None
    return [
        ToolCallChunk(
            index=p.index,
            id=p.id or None,
            type="function" if p.id else None,
            function=FunctionCallDelta(name=p.name or None, arguments=p.arguments),
        )
        for p in parts
    ]


def tool_calls_out(calls: list[ToolCall]) -> list[ToolCallOut] | msgspec.UnsetType:
    if not calls:
        return msgspec.UNSET
    return [ToolCallOut(c.id, FunctionCall(c.name, c.arguments)) for c in calls]


def _usage(run: JobRun) -> Usage:
    return Usage(
        run.prompt_tokens, run.completion_tokens, run.prompt_tokens + run.completion_tokens
    )


async def _stream(run: JobRun, body: ChatCompletionRequest) -> AsyncIterator[bytes]:
    created = int(time.time())
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    tier = service_tier_of(run.priority)

    def chunk(choices: list[ChunkChoice]) -> bytes:
        return sse.frame(
            ChatCompletionChunk(run.request_id, created, body.model, choices, service_tier=tier)
        )

    try:
        for index in range(body.n):
            yield chunk([ChunkChoice(index, ChunkDelta(role="assistant", content=""))])
        async for delta in run.updates():
            calls = tool_call_chunks(delta.tool_calls)
            logprobs = chat_choice_logprobs(delta.logprobs if body.logprobs else None)
            if delta.text or calls or logprobs:
                content = ChunkDelta(content=delta.text or None, tool_calls=calls)
                yield chunk([ChunkChoice(delta.index, content, logprobs=logprobs)])
        for index in range(body.n):
            reason = run.choice_finish_reason(index)
            yield chunk([ChunkChoice(index, ChunkDelta(), finish_reason=reason)])
        if include_usage:
            yield sse.frame(
                ChatCompletionChunk(
                    run.request_id, created, body.model, [], usage=_usage(run), service_tier=tier
                )
            )
        yield sse.DONE
    except EnclaveError as exc:
        yield sse.error_frame(exc)
    finally:
        await abandon_unless_settled(run)


class ChatCompletionsController(Controller):
    path = ENDPOINT

    @post("", status_code=200)
    async def create(
        self,
        request: Request[Any, Any, Any],
        gate: NamedDependency[Gate],
    ) -> Response[Any]:
        body, _, run = await admit(
            request,
            gate,
            endpoint=ENDPOINT,
            id_prefix="chatcmpl",
            schema=ChatCompletionRequest,
            convert=to_inference_request,
        )
        if body.stream:
            stream = _stream(run, body)
            return Stream(
                stream,
                media_type=sse.MEDIA_TYPE,
                headers=sse.headers(run.request_id) | run.ratelimit_headers,
            )
        await collect(request, run)
        calls = tool_calls_out(run.tool_calls)
        choices = []
        for index in range(body.n):
            text = run.choice_text(index)
            message = AssistantMessage(text or None if calls else text, tool_calls=calls)
            logprobs = run.logprob_parts.get(index, []) if body.logprobs else None
            reason = run.choice_finish_reason(index)
            choices.append(Choice(index, message, reason, chat_choice_logprobs(logprobs)))
        completion = ChatCompletion(
            run.request_id,
            int(time.time()),
            body.model,
            choices,
            _usage(run),
            service_tier=service_tier_of(run.priority),
        )
        return Response(
            completion, headers={"x-request-id": run.request_id} | run.ratelimit_headers
        )
