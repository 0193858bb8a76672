"""POST /v1/embeddings — OpenAI's embeddings API, served by workers of embedding models."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency

from gateway.api.embedding_inputs import openai_inputs
from gateway.api.intake import Gate, admit, collect
from gateway.api.vectors import base64_text, floats
from gateway.inference import InferenceRequest, JobRun
from gateway.queue.protocol import EmbedInputs, SamplingOptions
from gateway.schemas.embeddings import (
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
)

ENDPOINT = "/v1/embeddings"


def to_inference_request(body: EmbeddingRequest) -> InferenceRequest:
    inputs = openai_inputs(body.input)
    return InferenceRequest(
        endpoint=ENDPOINT,
        model=body.model,
        kind="embed",
        sampling=SamplingOptions(),
        embed=EmbedInputs(inputs=inputs, dimensions=body.dimensions),  # too long: a 400
    )


def embedding_list(run: JobRun, body: EmbeddingRequest) -> EmbeddingList:
    encode = base64_text if body.encoding_format == "base64" else floats
    return EmbeddingList(
        data=[Embedding(index=i, embedding=encode(v)) for i, v in enumerate(run.vectors)],
        model=body.model,
        usage=EmbeddingUsage(prompt_tokens=run.prompt_tokens, total_tokens=run.prompt_tokens),
    )


class EmbeddingsController(Controller):
    path = ENDPOINT

    @post("", status_code=200)
    async def create(
        self,
        request: Request[Any, Any, Any],
        gate: NamedDependency[Gate],
    ) -> Response[EmbeddingList]:
        """One vector per input: ``encoding_format`` float or base64 (float32 LE)."""
        body, _, run = await admit(
            request,
            gate,
            endpoint=ENDPOINT,
            id_prefix="embd",
            schema=EmbeddingRequest,
            convert=to_inference_request,
        )
        await collect(request, run)
        return Response(
            embedding_list(run, body),
            headers={"x-request-id": run.request_id} | run.ratelimit_headers,
        )
