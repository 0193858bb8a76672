"""POST /api/chat and /api/generate — Ollama's generation API, NDJSON streams by default.

A request without messages (chat) or prompt (generate) is Ollama's way to load a model: it
answers ``done_reason: "load"`` at once if the model is served, and runs nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.response import Stream

from gateway.api.intake import Gate, abandon_unless_settled, collect, received, start
from gateway.api.ollama.translate import (
    Clock,
    chat_request,
    enclave_name,
    generate_request,
    ollama_logprobs,
    ollama_tool_calls,
    timestamp,
)
from gateway.errors import EnclaveError
from gateway.inference import InferenceRequest, JobRun
from gateway.queue.protocol import TokenLogprob
from gateway.schemas.ollama import (
    AssistantMessage,
    ChatChunk,
    ChatRequest,
    GenerateChunk,
    GenerateRequest,
    ToolCall,
)

CHAT = "/api/chat"
GENERATE = "/api/generate"
MEDIA_TYPE = "application/x-ndjson"

_encoder = msgspec.json.Encoder()
B = TypeVar("B", ChatRequest, GenerateRequest)

# One piece of the answer (model, time, text, tool calls), as a chat or generate object.
Piece = Callable[[str, str, str, list[ToolCall]], msgspec.Struct]


def chat_piece(model: str, at: str, text: str, calls: list[ToolCall]) -> msgspec.Struct:
    return ChatChunk(model, at, AssistantMessage("assistant", text, calls or None))


def generate_piece(model: str, at: str, text: str, calls: list[ToolCall]) -> msgspec.Struct:
    return GenerateChunk(model, at, text)  # /api/generate offers no tools


def line(payload: Any) -> bytes:
    return _encoder.encode(payload) + b"\n"


def last(piece: msgspec.Struct, clock: Clock, run: JobRun) -> dict[str, Any]:
    """The final object: the piece with ``done: true``, the reason, counts and durations."""
    fields: dict[str, Any] = msgspec.to_builtins(piece)
    final: dict[str, Any] = msgspec.to_builtins(clock.final(run))
    return fields | final


def with_logprobs(piece: msgspec.Struct, entries: Sequence[TokenLogprob] | None) -> Any:
    """The piece, with Ollama's ``logprobs`` of its tokens when the request asked for them."""
    if entries is None:
        return piece
    fields: dict[str, Any] = msgspec.to_builtins(piece)
    return fields | {"logprobs": ollama_logprobs(entries)}


async def ndjson(
    run: JobRun, model: str, piece: Piece, clock: Clock, wants_logprobs: bool
) -> AsyncIterator[bytes]:
    try:
        async for delta in run.updates():
            if delta.text or (wants_logprobs and delta.logprobs):
                text_piece = piece(model, timestamp(), delta.text, [])
                yield line(with_logprobs(text_piece, delta.logprobs if wants_logprobs else None))
        calls, unparsed = ollama_tool_calls(run.tool_calls)
        if calls or unparsed:  # Ollama sends the calls in a piece of their own
            yield line(piece(model, timestamp(), unparsed, calls))
        yield line(last(piece(model, timestamp(), "", []), clock, run))
    except EnclaveError as exc:
        yield line({"error": exc.message})
    finally:
        await abandon_unless_settled(run)


async def answer(
    request: Request[Any, Any, Any],
    run: JobRun,
    model: str,
    stream: bool,
    piece: Piece,
    clock: Clock,
    wants_logprobs: bool,
) -> Response[Any]:
    headers = {"x-request-id": run.request_id} | run.ratelimit_headers
    if stream:
        body = ndjson(run, model, piece, clock, wants_logprobs)
        return Stream(body, media_type=MEDIA_TYPE, headers=headers)
    await collect(request, run)
    calls, unparsed = ollama_tool_calls(run.tool_calls)
    answered = piece(model, timestamp(), run.text + unparsed, calls)
    final = last(answered, clock, run)
    if wants_logprobs:
        final["logprobs"] = ollama_logprobs(run.logprob_parts.get(0, []))
    return Response(final, headers=headers)


def loaded(piece: msgspec.Struct) -> dict[str, Any]:
    fields: dict[str, Any] = msgspec.to_builtins(piece)
    return fields | {"done_reason": "load", "done": True}


def is_empty_chat(body: ChatRequest) -> bool:
    return not body.messages


def is_empty_generate(body: GenerateRequest) -> bool:
    return not body.prompt and not body.suffix


async def generation(
    request: Request[Any, Any, Any],
    gate: Gate,
    endpoint: str,
    schema: type[B],
    convert: Callable[[B, str, str], InferenceRequest],
    is_load: Callable[[B], bool],
    piece: Piece,
) -> Response[Any]:
    """Either endpoint: load (nothing to run), or run and answer, streaming or not."""
    clock = Clock()
    async with received(
        request, gate, endpoint=endpoint, id_prefix=endpoint.removeprefix("/api/"), schema=schema
    ) as (intake, principal, body):
        model = enclave_name(body.model, gate.ollama_aliases)
        if is_load(body):
            await gate.inference.find_worker(model, principal)
            return Response(loaded(piece(body.model, timestamp(), "", [])))
        job = convert(body, endpoint, model)
        run = await start(request, gate.inference, intake, principal, job)
    wants_logprobs = job.sampling.logprobs is not None
    return await answer(request, run, body.model, body.stream, piece, clock, wants_logprobs)


class OllamaGenerationController(Controller):
    tags = ("ollama",)

    @post(CHAT, status_code=200)
    async def chat(
        self,
        request: Request[Any, Any, Any],
        gate: NamedDependency[Gate],
    ) -> Response[Any]:
        """Ollama's chat: ``messages``, ``stream`` (default true), ``options``."""
        return await generation(
            request,
            gate,
            CHAT,
            ChatRequest,
            chat_request,
            is_empty_chat,
            chat_piece,
        )

    @post(GENERATE, status_code=200)
    async def generate(
        self,
        request: Request[Any, Any, Any],
        gate: NamedDependency[Gate],
    ) -> Response[Any]:
        """Ollama's completion: ``prompt``, ``system``, ``raw``, ``stream``, ``options``."""
        return await generation(
            request,
            gate,
            GENERATE,
            GenerateRequest,
            generate_request,
            is_empty_generate,
            generate_piece,
        )
