"""POST /api/embed and /api/embeddings — Ollama's embeddings, served by embedding workers.

Nothing to embed (no input, an empty string or an empty prompt) is Ollama's way to load
the model: the answer is empty at once if the model is served, and nothing runs.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency

from gateway.api.embedding_inputs import ollama_inputs
from gateway.api.intake import Gate, Intake, collect, received, start
from gateway.api.ollama.translate import enclave_name, nanoseconds
from gateway.api.vectors import floats
from gateway.auth.principal import Principal
from gateway.inference import InferenceRequest, InferenceService, JobRun, check_task
from gateway.queue.protocol import EmbedInputs, SamplingOptions
from gateway.schemas.ollama_embed import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
)

EMBED = "/api/embed"
EMBEDDINGS = "/api/embeddings"


async def embed(
    request: Request[Any, Any, Any],
    inference: InferenceService,
    intake: Intake,
    principal: Principal,
    model: str,
    inputs: EmbedInputs,
) -> JobRun | None:
    """Run the inputs on a worker of ``model``; None when there is nothing to embed."""
    if not inputs.inputs:
        worker = await inference.find_worker(model, principal)
        check_task(worker, model, "embed")
        return None
    job = InferenceRequest(
        endpoint=intake.endpoint,
        model=model,
        kind="embed",
        sampling=SamplingOptions(),
        embed=inputs,
    )
    return await start(request, inference, intake, principal, job)


class OllamaEmbedController(Controller):
    tags = ("ollama",)

    @post(EMBED, status_code=200)
    async def embed(
        self,
        request: Request[Any, Any, Any],
        gate: NamedDependency[Gate],
    ) -> Response[EmbedResponse]:
        """Ollama's embeddings: ``input`` (string or strings), ``truncate``, ``dimensions``."""
        started = time.perf_counter()
        async with received(
            request,
            gate,
            endpoint=EMBED,
            id_prefix="embed",
            schema=EmbedRequest,
        ) as (intake, principal, body):
            model = enclave_name(body.model, gate.ollama_aliases)
            inputs = EmbedInputs(ollama_inputs(body.input), body.dimensions, body.truncate)
            run = await embed(request, gate.inference, intake, principal, model, inputs)
        if run is not None:
            await collect(request, run)
        answer = EmbedResponse(
            model=body.model,
            embeddings=[floats(v) for v in run.vectors] if run else [],
            total_duration=nanoseconds(time.perf_counter() - started),
            load_duration=0,  # models stay loaded in their workers
            prompt_eval_count=run.prompt_tokens if run else 0,
        )
        return Response(answer, headers=headers(run))

    @post(EMBEDDINGS, status_code=200)
    async def embeddings(
        self,
        request: Request[Any, Any, Any],
        gate: NamedDependency[Gate],
    ) -> Response[EmbeddingsResponse]:
        """Ollama's older embeddings call: one ``prompt``, one ``embedding``."""
        async with received(
            request,
            gate,
            endpoint=EMBEDDINGS,
            id_prefix="embeddings",
            schema=EmbeddingsRequest,
        ) as (intake, principal, body):
            model = enclave_name(body.model, gate.ollama_aliases)
            inputs = EmbedInputs((body.prompt,) if body.prompt else (), truncate=True)
            run = await embed(request, gate.inference, intake, principal, model, inputs)
        if run is not None:
            await collect(request, run)
        vector = floats(run.vectors[0]) if run else []
        return Response(EmbeddingsResponse(vector), headers=headers(run))


def headers(run: JobRun | None) -> dict[str, str]:
    return {} if run is None else {"x-request-id": run.request_id} | run.ratelimit_headers
