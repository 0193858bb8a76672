"""Log probabilities: OpenAI's request fields checked, the worker's per-token figures in
OpenAI's two answer shapes (chat's ``content`` list, legacy completions' parallel lists)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import InvalidRequest
from gateway.queue.protocol import TokenLogprob
from gateway.schemas.chat_completions import ChoiceLogprobs, TokenLogprobOut, TopLogprobOut
from gateway.schemas.completions import CompletionLogprobs

MAX_COMPLETION_LOGPROBS = 5  # the legacy completions API's limit


def chat_logprobs(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """The alternatives per token the worker reports (None: no logprobs)."""
    if top_logprobs is not None and not logprobs:
        raise InvalidRequest(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when "
            "'top_logprobs' is used.",
            param="top_logprobs",
        )
    return (top_logprobs or 0) if logprobs else None


def completion_logprobs(logprobs: int | None) -> int | None:
    if logprobs is not None and not 0 <= logprobs <= MAX_COMPLETION_LOGPROBS:
        raise InvalidRequest(
            f"Invalid value for 'logprobs': it must be from 0 to {MAX_COMPLETION_LOGPROBS}.",
            param="logprobs",
        )
    return logprobs


def _bytes(token: str) -> list[int]:
    return list(token.encode())


def token_logprobs(entries: Sequence[TokenLogprob]) -> list[TokenLogprobOut]:
    """Each token with its bytes and its likeliest alternatives: the entries of chat's
    ``logprobs.content``, and of Ollama's ``logprobs``, which has the same fields."""
    return [
        TokenLogprobOut(
            e.token,
            e.logprob,
            _bytes(e.token),
            [TopLogprobOut(t.token, t.logprob, _bytes(t.token)) for t in e.top],
        )
        for e in entries
    ]


def chat_choice_logprobs(entries: Sequence[TokenLogprob] | None) -> ChoiceLogprobs | None:
    """Chat's ``logprobs`` of a choice (or of a stream chunk's tokens)."""
    if entries is None:
        return None
    return ChoiceLogprobs(content=token_logprobs(entries))


def legacy_logprobs(entries: Sequence[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
    """The completions API's ``logprobs``: parallel lists; ``text_offset`` counts characters
    from ``offset`` (the echoed prompt's length)."""
    offsets, at = [], offset
    for e in entries:
        offsets.append(at)
        at += len(e.token)
    top: list[dict[str, Any]] = [{t.token: t.logprob for t in e.top} for e in entries]
    return CompletionLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=top,
        text_offset=offsets,
    )
