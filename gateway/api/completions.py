"""POST /v1/completions — OpenAI's legacy text completions, streaming and not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.response import Stream

from gateway.api import sse
from gateway.api.intake import abandon_unless_settled, admit, collect
from gateway.api.sampling import refuse_unsupported, sampling_options
from gateway.auth.authenticator import Authenticator
from gateway.errors import EnclaveError, InvalidRequest
from gateway.inference import InferenceRequest, InferenceService, JobRun
from gateway.schemas.chat_completions import Usage
from gateway.schemas.completions import Completion, CompletionChoice, CompletionRequest
from gateway.settings import HttpSettings

ENDPOINT = "/v1/completions"


def to_inference_request(body: CompletionRequest) -> InferenceRequest:
    refuse_unsupported(
        n=body.n,
        best_of=body.best_of,
        suffix=body.suffix,
        logprobs=body.logprobs,
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
        sampling=sampling_options(body, max_tokens=body.max_tokens),
        prompt=prompt,
        echo=body.echo,
    )


def _usage(run: JobRun) -> Usage:
    return Usage(
        run.prompt_tokens, run.completion_tokens, run.prompt_tokens + run.completion_tokens
    )


async def _stream(run: JobRun, body: CompletionRequest, prompt: str) -> AsyncIterator[bytes]:
    created = int(time.time())
    include_usage = body.stream_options is not None and body.stream_options.include_usage

    def chunk(text: str, finish_reason: str | None = None) -> bytes:
        choice = CompletionChoice(text=text, index=0, finish_reason=finish_reason)
        return sse.frame(Completion(run.request_id, created, body.model, [choice]))

    try:
        if body.echo:
            yield chunk(prompt)
        async for text in run.deltas():
            yield chunk(text)
        yield chunk("", run.finish_reason or "stop")
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
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        http_settings: NamedDependency[HttpSettings],
    ) -> Response[Any]:
        body, job, run = await admit(
            request,
            inference,
            authenticator,
            http_settings.max_body_bytes,
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
        text = job.prompt + run.text if body.echo else run.text
        choice = CompletionChoice(text=text, index=0, finish_reason=run.finish_reason or "stop")
        completion = Completion(
            run.request_id, int(time.time()), body.model, [choice], usage=_usage(run)
        )
        return Response(
            completion, headers={"x-request-id": run.request_id} | run.ratelimit_headers
        )
