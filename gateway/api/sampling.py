"""OpenAI request fields → the queue's SamplingOptions, refusing what is not supported."""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest
from gateway.queue.protocol import SamplingOptions


def stop_sequences(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def refuse_unsupported(**fields: Any) -> None:
    """400 for features this gateway does not offer yet, instead of silently ignoring them."""
    for name, value in fields.items():
        if value is not None and value is not False and value != [] and value != 1:
            raise InvalidRequest(f"`{name}` is not supported by this server yet.", param=name)


MAX_LOGIT_BIAS_ENTRIES = 300  # OpenAI's own limit


def logit_bias(value: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """OpenAI's ``logit_bias`` (token id as a string -> bias from -100 to 100) as pairs; the
    worker checks the ids against the model's vocabulary."""
    if not value:
        return ()
    if len(value) > MAX_LOGIT_BIAS_ENTRIES:
        raise InvalidRequest(
            f"logit_bias may hold at most {MAX_LOGIT_BIAS_ENTRIES} tokens.", param="logit_bias"
        )
    pairs = []
    for token, bias in value.items():
        is_token_id = token.isascii() and token.isdigit() and len(token) <= 10
        if not is_token_id or not -100 <= bias <= 100:
            raise InvalidRequest(
                f"Invalid logit_bias entry {token!r}: {bias!r}; keys are token ids and "
                "values from -100 to 100.",
                param="logit_bias",
            )
        pairs.append((int(token), float(bias)))
    return tuple(sorted(pairs))


def sampling_options(request: Any, *, max_tokens: int | None) -> SamplingOptions:
    """Build options from the fields chat and text completions share."""
    return SamplingOptions(
        max_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        min_p=request.min_p,
        seed=request.seed,
        stop=stop_sequences(request.stop),
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        repetition_penalty=request.repetition_penalty,
        ignore_eos=request.ignore_eos,
        logit_bias=logit_bias(request.logit_bias),
    )
