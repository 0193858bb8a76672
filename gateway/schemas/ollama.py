"""Wire models of Ollama's API (``/api/*``), field for field as Ollama sends and reads them.

Durations are nanoseconds; times are RFC 3339 with a ``Z``. Streams are NDJSON, one object
per line, the last with ``done: true`` and the counts and durations.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Options(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Ollama's model options that touch sampling, and those about hardware and memory that
    an Enclave worker decides for itself (accepted and ignored: see ``IGNORED_OPTIONS``)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    num_predict: int | None = None
    stop: list[str] | str | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # Sampling Ollama has and vLLM does not: refused when set to anything but neutral.
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    tfs_z: float | None = None
    typical_p: float | None = None
    repeat_last_n: int | None = None
    penalize_newline: bool | None = None
    # The worker's own business.
    num_ctx: int | None = None
    num_keep: int | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    num_thread: int | None = None
    numa: bool | None = None
    low_vram: bool | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    vocab_only: bool | None = None


class Message(msgspec.Struct, frozen=True):
    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[Any] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class ChatRequest(msgspec.Struct, frozen=True):
    model: str
    messages: list[Message] = []
    stream: bool = True
    format: Any = None
    options: Options | None = None
    keep_alive: Any = None
    tools: list[Any] | None = None
    think: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class GenerateRequest(msgspec.Struct, frozen=True):
    model: str
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    stream: bool = True
    raw: bool = False
    format: Any = None
    images: list[str] | None = None
    options: Options | None = None
    keep_alive: Any = None
    think: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class ModelRequest(msgspec.Struct, frozen=True):
    """``/api/show``: ``model``, or ``name`` as older clients send it."""

    model: str | None = None
    name: str | None = None
    verbose: bool = False


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: dict[str, Any]


class ToolCall(msgspec.Struct, frozen=True):
    """A call of a tool: Ollama's arguments are an object, not JSON text."""

    function: FunctionCall


class AssistantMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    role: str
    content: str
    tool_calls: list[ToolCall] | None = None


class ChatChunk(msgspec.Struct, frozen=True):
    model: str
    created_at: str
    message: AssistantMessage
    done: bool = False


class GenerateChunk(msgspec.Struct, frozen=True):
    model: str
    created_at: str
    response: str
    done: bool = False


class Final(msgspec.Struct, frozen=True):
    """What the last object of a stream (or the only one) adds."""

    done_reason: str
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    done: bool = True


class Details(msgspec.Struct, frozen=True):
    parent_model: str = ""
    format: str = "safetensors"
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


class ModelEntry(msgspec.Struct, frozen=True):
    """One model of ``/api/tags``; ``/api/ps`` adds expiry, sizes and its context length."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: Details


class Tags(msgspec.Struct, frozen=True):
    models: list[ModelEntry]


class RunningModel(msgspec.Struct, frozen=True):
    name: str
    model: str
    size: int
    digest: str
    details: Details
    expires_at: str
    size_vram: int
    context_length: int


class Running(msgspec.Struct, frozen=True):
    models: list[RunningModel]


class Show(msgspec.Struct, frozen=True):
    modelfile: str
    parameters: str | msgspec.UnsetType
    """Left out when the model has none, as Ollama does (Continue parses every line)."""
    template: str
    details: Details
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class Version(msgspec.Struct, frozen=True):
    version: str
