"""Embed jobs on a worker: fit each input to the context, then run them all at once.

An embed job answers Started (the prompt tokens counted), then Embedded (every vector) and
Finished. Nothing partial ever reaches a client, so no streamed flag is set: a job reclaimed
from a dead worker simply runs again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.queue.protocol import Embedded, Failed, Finished, Job
from workers.engine import EngineRequestError, InferenceEngine
from workers.publisher import EventPublisher

NOT_AN_EMBEDDING_MODEL = "This model does not support embeddings."
NOT_A_GENERATIVE_MODEL = "This model is an embedding model; it does not support generation."


def fit_embedding_input(
    token_ids: Sequence[int], index: int, max_context: int, *, truncate: bool
) -> list[int]:
    """The input's token ids, cut to ``max_context`` when ``truncate``; else a 400 if long."""
    if len(token_ids) <= max_context:
        return list(token_ids)
    if truncate:
        return list(token_ids[:max_context])
    raise EngineRequestError(
        f"This model's maximum context length is {max_context} tokens, however you requested "
        f"{len(token_ids)} tokens in input {index}. Please reduce the length of the input.",
        code="context_length_exceeded",
        param="input",
    )


def check_token_ids(token_ids: Sequence[int], index: int, vocab_size: int) -> None:
    """Token ids given by the client must name tokens of this model's vocabulary."""
    for token in token_ids:
        if not 0 <= token < vocab_size:
            raise EngineRequestError(
                f"Input {index} names token {token}; this model's vocabulary has "
                f"{vocab_size} tokens.",
                code="invalid_value",
                param="input",
            )


def refusal(job: Job, exc: EngineRequestError) -> Failed:
    return Failed(job.id, 400, "invalid_request_error", exc.code, exc.message, param=exc.param)


async def serve_embedding(
    job: Job,
    engine: InferenceEngine,
    publisher: EventPublisher,
    started: Callable[[int], None],
) -> None:
    """Run one embed job; ``started(prompt_tokens)`` announces it (Started, counters)."""
    if job.kind != "embed" or job.embed is None:
        wrong = EngineRequestError(
            NOT_A_GENERATIVE_MODEL, code="model_not_supported", param="model"
        )
        publisher.reply(job, refusal(job, wrong))
        return
    try:
        token_ids = await engine.prepare_embedding(job.embed)
        prompt_tokens = sum(len(ids) for ids in token_ids)
        started(prompt_tokens)
        vectors = await engine.embed(job.id, token_ids, job.embed.dimensions)
    except EngineRequestError as exc:
        publisher.reply(job, refusal(job, exc))
        return
    publisher.reply(job, Embedded(job.id, vectors))
    publisher.reply(job, Finished(job.id, "stop", prompt_tokens, 0))
