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
from gateway.api.intake import abandon_unless_settled, admit, collect
from gateway.api.sampling import refuse_unsupported, sampling_options
from gateway.api.structured import response_format
from gateway.auth.authenticator import Authenticator
from gateway.errors import EnclaveError, InvalidRequest
from gateway.inference import InferenceRequest, InferenceService, JobRun, service_tier_of
from gateway.queue.protocol import ChatMessage
from gateway.schemas.chat_completions import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    Choice,
    ChunkChoice,
    ChunkDelta,
    Usage,
)
from gateway.settings import HttpSettings

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


def to_inference_request(body: ChatCompletionRequest) -> InferenceRequest:
    refuse_unsupported(
        n=body.n,
        logprobs=body.logprobs,
        top_logprobs=body.top_logprobs,
        tools=body.tools,
        tool_choice=body.tool_choice if body.tool_choice != "none" else None,
        functions=body.functions,
        function_call=body.function_call,
    )
    messages = tuple(
        ChatMessage(role=m.role, content=flatten_content(m, i)) for i, m in enumerate(body.messages)
    )
    max_tokens = body.max_completion_tokens or body.max_tokens
    return InferenceRequest(
        endpoint=ENDPOINT,
        model=body.model,
        kind="chat",
        sampling=msgspec.structs.replace(
            sampling_options(body, max_tokens=max_tokens), **response_format(body.response_format)
        ),
        messages=messages,
        service_tier=body.service_tier,
    )


def _usage(run: JobRun) -> Usage:
    return Usage(
        run.prompt_tokens, run.completion_tokens, run.prompt_tokens + run.completion_tokens
    )


async def _stream(run: JobRun, body: ChatCompletionRequest) -> AsyncIterator[bytes]:
    created = int(time.time())
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    tier = service_tier_of(run.priority)

    def chunk(delta: ChunkDelta, finish_reason: str | None = None) -> bytes:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish_reason)
        return sse.frame(
            ChatCompletionChunk(run.request_id, created, body.model, [choice], service_tier=tier)
        )

    try:
        yield chunk(ChunkDelta(role="assistant", content=""))
        async for text in run.deltas():
            yield chunk(ChunkDelta(content=text))
        yield chunk(ChunkDelta(), run.finish_reason or "stop")
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
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        http_settings: NamedDependency[HttpSettings],
    ) -> Response[Any]:
        body, _, run = await admit(
            request,
            inference,
            authenticator,
            http_settings.max_body_bytes,
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
        choice = Choice(0, AssistantMessage(run.text), run.finish_reason or "stop")
        completion = ChatCompletion(
            run.request_id,
            int(time.time()),
            body.model,
            [choice],
            _usage(run),
            service_tier=service_tier_of(run.priority),
        )
        return Response(
            completion, headers={"x-request-id": run.request_id} | run.ratelimit_headers
        )
