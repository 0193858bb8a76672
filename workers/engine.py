"""The InferenceEngine port: what the queue consumer needs from an inference engine.

Adapters: ``VllmEngine`` (workers/vllm_engine.py; it and workers/vllm_outputs.py alone
import vllm) and ``FakeEngine`` in tests/fakes for unit tests of the consumer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.queue.protocol import (
    ChatMessage,
    EmbedInputs,
    SamplingOptions,
    TokenLogprob,
    ToolCallDelta,
    Tools,
)


@dataclass(frozen=True)
class EngineInfo:
    """Static facts about the loaded model, announced in the worker heartbeat."""

    model: str
    max_context: int
    capacity: int
    weights_digest: str
    architecture: str = ""
    """The model's family as its configuration names it (``model_type``, e.g. ``llama``)."""
    chat_template: str = ""
    generation_defaults: Mapping[str, Any] = field(default_factory=dict)
    """Sampling defaults from the model's generation config (e.g. temperature)."""
    tool_parser: str = ""
    """The parser of the model's tool-call syntax; empty: no ``tool_choice: "auto"``."""
    fim_template: str = ""
    """The model's fill-in-the-middle prompt (``{prefix}``, ``{suffix}``); empty: none."""
    task: str = "generate"
    """``generate``, or ``embed`` for a pooling model (see WorkerInfo.task)."""
    embedding_size: int = 0


@dataclass(frozen=True)
class ChatPrompt:
    messages: tuple[ChatMessage, ...]
    tools: Tools | None = None


@dataclass(frozen=True)
class TextPrompt:
    text: str
    suffix: str | None = None
    """Fill in between ``text`` and this (the model's FIM template shapes the prompt)."""


Prompt = ChatPrompt | TextPrompt


@dataclass(frozen=True)
class EngineOutput:
    """One engine step for one choice of a request: the new text since its last output.
    ``completion_tokens`` counts all choices; ``finish_reason`` ends choice ``index``."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    index: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class EngineLoad:
    """What the engine's scheduler last reported: requests running in the batch, requests
    waiting inside the engine, and the share of the KV cache in use (0 to 1)."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0


class EngineRequestError(Exception):
    """The request cannot run as asked (e.g. prompt plus max_tokens exceed the context)."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


class InferenceEngine(Protocol):
    @property
    def info(self) -> EngineInfo: ...

    def generate(
        self, request_id: str, prompt: Prompt, sampling: SamplingOptions
    ) -> AsyncIterator[EngineOutput]:
        """Stream outputs. Raises EngineRequestError before the first output on bad input.

        Closing the iterator early (or cancelling the task consuming it) aborts the request
        inside the engine.
        """
        ...

    async def prepare_embedding(self, request: EmbedInputs) -> list[list[int]]:
        """The token ids of each input, fitted to the context (cut when ``truncate``), with
        ``dimensions`` checked; raises EngineRequestError (also on a model that does not
        embed)."""
        ...

    async def embed(
        self, request_id: str, token_ids: Sequence[Sequence[int]], dimensions: int | None
    ) -> list[bytes]:
        """One vector per input, float32 little-endian. Cancelling the call, or
        ``abort(request_id)``, aborts every input's request inside the engine."""
        ...

    async def abort(self, request_id: str) -> None:
        """Abort a running request; unknown ids are ignored."""
        ...

    def num_unfinished(self) -> int:
        """Requests the engine itself still holds (running or waiting inside it)."""
        ...

    def load(self) -> EngineLoad:
        """The scheduler's latest figures, for the worker's metrics."""
        ...

    async def check_health(self) -> None:
        """Raise if the engine is dead."""
        ...

    def shutdown(self) -> None: ...
