"""Wire models of POST /v1/completions (OpenAI's legacy text completions)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from gateway.schemas.chat_completions import (
    Penalty,
    PositiveInt,
    Probability,
    StreamOptions,
    Temperature,
    Usage,
)


class CompletionRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str
    prompt: str | Annotated[list[str], Meta(min_length=1)]
    max_tokens: PositiveInt = 16  # OpenAI's default for this endpoint
    temperature: Temperature | None = None
    top_p: Probability | None = None
    n: Annotated[int, Meta(ge=1, le=128)] = 1
    best_of: PositiveInt | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Meta(max_length=16)] | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    top_k: int | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Meta(gt=0, le=2)] | None = None
    ignore_eos: bool = False
    metadata: Any = None


class CompletionLogprobs(msgspec.Struct, frozen=True):
    """The legacy API's log probabilities: parallel lists, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(msgspec.Struct, frozen=True):
    text: str
    index: int
    finish_reason: str | None = None
    logprobs: CompletionLogprobs | None = None


class Completion(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    object: str = "text_completion"
    system_fingerprint: str | None = None
    usage: Usage | None = None
