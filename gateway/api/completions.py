"""POST /v1/completions — OpenAI's legacy text completions, streaming and not."""

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
from gateway.api.logprobs import completion_logprobs, legacy_logprobs
from gateway.api.sampling import refuse_unsupported, sampling_options
from gateway.errors import EnclaveError, InvalidRequest
from gateway.inference import InferenceRequest, JobRun
from gateway.schemas.chat_completions import Usage
from gateway.schemas.completions import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)

ENDPOINT = "/v1/completions"


def to_inference_request(body: CompletionRequest) -> InferenceRequest:
    refuse_unsupported(best_of=body.best_of if body.best_of != body.n else None)
    logprobs = completion_logprobs(body.logprobs)
    if logprobs is not None and body.echo:
        raise InvalidRequest(
            "`echo` with `logprobs` (the prompt's log probabilities) is not supported by this "
            "server yet.",
            param="echo",
        )
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise InvalidRequest("Only one prompt per request is supported.", param="prompt")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    return InferenceRequest(
        endpoint=ENDPOINT,
        model=body.model,
        kind="completion",
        sampling=msgspec.structs.replace(
            sampling_options(body, max_tokens=body.max_tokens), n=body.n, logprobs=logprobs
        ),
        prompt=prompt,
        suffix=body.suffix,
        echo=body.echo,
    )


def _usage(run: JobRun) -> Usage:
    return Usage(
        run.prompt_tokens, run.completion_tokens, run.prompt_tokens + run.completion_tokens
    )


def _choice_logprobs(run: JobRun, body: CompletionRequest, index: int) -> CompletionLogprobs | None:
    if body.logprobs is None:
        return None
    return legacy_logprobs(run.logprob_parts.get(index, []))


async def _stream(run: JobRun, body: CompletionRequest, prompt: str) -> AsyncIterator[bytes]:
    created = int(time.time())
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    offsets = dict.fromkeys(range(body.n), len(prompt) if body.echo else 0)

    def chunk(choices: list[CompletionChoice]) -> bytes:
        return sse.frame(Completion(run.request_id, created, body.model, choices))

    try:
        if body.echo:
            yield chunk([CompletionChoice(text=prompt, index=i) for i in range(body.n)])
        async for delta in run.updates():
            logprobs = None
            if body.logprobs is not None:
                logprobs = legacy_logprobs(delta.logprobs, offsets[delta.index])
                offsets[delta.index] += sum(len(e.token) for e in delta.logprobs)
            if delta.text or logprobs:
                yield chunk([CompletionChoice(delta.text, delta.index, logprobs=logprobs)])
        yield chunk([CompletionChoice("", i, run.choice_finish_reason(i)) for i in range(body.n)])
        if include_usage:
            yield sse.frame(Completion(run.request_id, created, body.model, [], usage=_usage(run)))
        yield sse.DONE
    except EnclaveError as exc:
        yield sse.error_frame(exc)
    finally:
        await abandon_unless_settled(run)


class CompletionsController(Controller):
    path = ENDPOINT

    @post("", status_code=200)
    async def create(
        self,
        request: Request[Any, Any, Any],
        gate: NamedDependency[Gate],
    ) -> Response[Any]:
        body, job, run = await admit(
            request,
            gate,
            endpoint=ENDPOINT,
            id_prefix="cmpl",
            schema=CompletionRequest,
            convert=to_inference_request,
        )
        if body.stream:
            stream = _stream(run, body, job.prompt)
            return Stream(
                stream,
                media_type=sse.MEDIA_TYPE,
                headers=sse.headers(run.request_id) | run.ratelimit_headers,
            )
        await collect(request, run)
        echoed = job.prompt if body.echo else ""
        choices = [
            CompletionChoice(
                text=echoed + run.choice_text(i),
                index=i,
                finish_reason=run.choice_finish_reason(i),
                logprobs=_choice_logprobs(run, body, i),
            )
            for i in range(body.n)
        ]
        completion = Completion(
            run.request_id, int(time.time()), body.model, choices, usage=_usage(run)
        )
        return Response(
            completion, headers={"x-request-id": run.request_id} | run.ratelimit_headers
        )
