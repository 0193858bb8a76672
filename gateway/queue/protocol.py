"""The queue protocol shared by gateway and workers: job and event messages, Redis key names.

Imports neither litestar, sqlalchemy nor vllm (a unit test proves it): workers import this
module without pulling in the gateway's web and database stack.

Wire format: msgpack (msgspec) in the field ``m`` of a Redis stream entry (a job, or one
event), or in the field ``b`` (a msgpack array of events: what a worker wrote to one inbox in
one engine step, in order). Never pickle.

    gateway ──enqueue.lua──▶ jobs stream (per model, priority class and tenant)
        ──pick.lua (least weighted service first)──▶ worker
    worker ──XADD──▶ inbox stream (per gateway replica) ──XREAD──▶ gateway ──▶ client
    gateway ──PUBLISH cancel channel + SET cancel key──▶ worker aborts the engine request
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec

KEY_PREFIX = "enclave"
WORKER_GROUP = "workers"
CANCEL_CHANNEL = f"{KEY_PREFIX}:cancel"
MESSAGE_FIELD = b"m"
BATCH_FIELD = b"b"


Priority = Literal["interactive", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")
"""Strict order: a worker takes batch work only when no interactive job waits."""
FIFO_QUEUE = "*"
"""The one queue of every tenant when the gateway schedules first come, first served."""


def new_call_id() -> str:
    """A tool call's id, shaped as OpenAI's (``call_`` and 24 characters)."""
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCall(msgspec.Struct, frozen=True, omit_defaults=True):
    """A call of a function tool, as in OpenAI's ``tool_calls`` (arguments: JSON text)."""

    id: str
    name: str
    arguments: str


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """One chat turn, content already flattened to text by the gateway."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    """An assistant turn's calls of tools."""
    tool_call_id: str | None = None
    """A tool turn: the call it answers."""
    name: str | None = None


class SamplingOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    """OpenAI sampling parameters, after validation; None means the engine default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    json_schema: str | None = None
    """The answer must be JSON valid under this JSON Schema (its JSON text)."""
    json_object: bool = False
    """The answer must be a JSON object (no schema)."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias in [-100, 100]) pairs added to the logits before sampling."""
    max_tokens_is_cap: bool = False
    """``max_tokens`` bounds the answer but may exceed what the context leaves, which then
    bounds it instead (Ollama's ``num_predict``); False: more than fits is a 400 (OpenAI)."""
    n: int = 1
    """Choices to sample for the one prompt."""
    logprobs: int | None = None
    """Report each sampled token's log probability and the ``logprobs`` likeliest
    alternatives' (0: the sampled token only); None: none."""


class EmbedInputs(msgspec.Struct, frozen=True, omit_defaults=True):
    """What an embedding job asks for: one vector per input, a text or its token ids."""

    inputs: tuple[str | tuple[int, ...], ...]
    dimensions: int | None = None
    """Shorter vectors, where the model supports it (Matryoshka); None: the model's size."""
    truncate: bool = False
    """Cut an input longer than the model's context (Ollama's default) instead of refusing it."""


class Job(msgspec.Struct, frozen=True, omit_defaults=True):
    """One inference request, queued by a gateway for any worker serving ``model``."""

    id: str
    model: str
    kind: Literal["chat", "completion", "embed"]
    reply_to: str
    tenant: str
    sampling: SamplingOptions
    enqueued_at: float
    messages: tuple[ChatMessage, ...] = ()
    prompt: str = ""
    echo: bool = False
    start_by: float = 0.0
    """Unix time after which no worker may start the job (its gateway has answered 503);
    0: no deadline."""
    priority: Priority = "interactive"
    queue: str = ""
    """The scheduling queue within (model, priority): the tenant, or ``*`` in FIFO order."""
    weight: float = 1.0
    """The queue's share: its service counter grows by tokens / weight."""
    cost: int = 0
    """Prompt tokens as estimated by the gateway, charged when the job is picked."""
    tools: Tools | None = None
    suffix: str | None = None
    """A completion job's text after the gap (fill-in-the-middle); ``prompt`` is before it."""
    trace: dict[str, str] = msgspec.field(default_factory=dict)
    """The W3C trace context (``traceparent``) of the request, when it is traced."""
    embed: EmbedInputs | None = None
    """The inputs of an ``embed`` job."""
    reads_batches: bool = False
    """The gateway reads inbox entries holding several events (``BATCH_FIELD``); to an
    older one, which does not, the worker writes one entry per event."""

    @property
    def queue_name(self) -> str:
        return self.queue or self.tenant


class Tools(msgspec.Struct, frozen=True):
    """The function tools a chat job offers the model, and OpenAI's ``tool_choice``."""

    functions: str
    """The ``tools`` array as OpenAI's JSON text, checked by the gateway."""
    choice: str = "auto"
    """``auto``, ``none``, ``required``, or the name of the one function to call."""
    is_named: bool = False
    """``choice`` names a function (a function may be called ``required``)."""


class Started(msgspec.Struct, frozen=True, tag_field="event", tag="started"):
    """The worker accepted the job and the prompt fits: tokens follow."""

    job_id: str
    worker_id: str
    prompt_tokens: int
    weights_digest: str


class ToolCallDelta(msgspec.Struct, frozen=True, omit_defaults=True):
    """A piece of the ``index``-th tool call, framed as OpenAI streams them: the first piece
    carries the id and name, later ones more of the arguments' JSON text."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


class TopLogprob(msgspec.Struct, frozen=True, array_like=True):
    token: str
    logprob: float


class TokenLogprob(msgspec.Struct, frozen=True, array_like=True):
    """A sampled token's text and log probability, and the likeliest tokens' in its place."""

    token: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()


class Delta(msgspec.Struct, frozen=True, tag_field="event", tag="delta"):
    """New text of choice ``index``, coalesced per engine step; ``completion_tokens`` is the
    running total over all choices. ``seq`` numbers a job's deltas from 1 (0: unnumbered),
    so a write the worker retried, and Redis took twice, reaches the client once."""

    job_id: str
    text: str
    completion_tokens: int
    tool_calls: tuple[ToolCallDelta, ...] = ()
    index: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    seq: int = 0


class Finished(msgspec.Struct, frozen=True, tag_field="event", tag="finished"):
    """The job ended normally; the counts are the engine's own."""

    job_id: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    finish_reasons: tuple[str, ...] = ()
    """Every choice's reason, by index, when the job sampled more than one."""


class Failed(msgspec.Struct, frozen=True, tag_field="event", tag="failed"):
    """The job ended with an error; ``status`` is the HTTP status a client should see."""

    job_id: str
    status: int
    type: str
    code: str
    message: str
    param: str | None = None


class Embedded(msgspec.Struct, frozen=True, tag_field="event", tag="embedded"):
    """The vectors of an embed job, one per input in order, each float32 little-endian;
    ``Finished`` follows with the token count."""

    job_id: str
    vectors: list[bytes]


Event = Started | Delta | Finished | Failed | Embedded

_job_encoder = msgspec.msgpack.Encoder()
_job_decoder = msgspec.msgpack.Decoder(Job)
_event_decoder = msgspec.msgpack.Decoder(Event)
_batch_decoder = msgspec.msgpack.Decoder(list[Event])


def encode(message: Job | Event) -> bytes:
    return _job_encoder.encode(message)


def decode_job(data: bytes) -> Job:
    return _job_decoder.decode(data)


def decode_event(data: bytes) -> Event:
    return _event_decoder.decode(data)


def encode_batch(encoded_events: list[bytes]) -> bytes:
    """A msgpack array of events already encoded one by one (``encode``)."""
    n = len(encoded_events)
    if n < 16:
        header = bytes((0x90 | n,))
    elif n < 1 << 16:
        header = b"\xdc" + n.to_bytes(2, "big")
    else:
        header = b"\xdd" + n.to_bytes(4, "big")
    return header + b"".join(encoded_events)


def decode_batch(data: bytes) -> list[Event]:
    return _batch_decoder.decode(data)


# Every Redis key is built here, under one prefix.


def jobs_prefix(model: str) -> str:
    return f"{KEY_PREFIX}:jobs:{model}:"


def jobs_stream_key(model: str, priority: Priority, queue: str) -> str:
    """Stream of one queue's jobs (a tenant's, or FIFO_QUEUE) in one priority class."""
    return f"{jobs_prefix(model)}{priority}:{queue}"


def queues_key(model: str) -> str:
    """SET of every jobs stream of ``model``: where workers look for jobs to reclaim."""
    return f"{KEY_PREFIX}:queues:{model}"


BACKLOG_KEY_PREFIX = f"{KEY_PREFIX}:backlog:"


def backlog_key(model: str, priority: Priority) -> str:
    """HASH queue -> jobs not yet delivered to a worker; a queue is backlogged iff present."""
    return f"{BACKLOG_KEY_PREFIX}{model}:{priority}"


def service_key(model: str) -> str:
    """HASH queue -> weighted tokens served (the virtual token counter)."""
    return f"{KEY_PREFIX}:vtc:{model}"


def service_floor_key(model: str) -> str:
    """HASH priority -> the counter of the queue that last left that class's backlog."""
    return f"{KEY_PREFIX}:vtc-floor:{model}"


def work_channel(model: str) -> str:
    """Pub/sub channel on which each enqueue wakes the workers of ``model``."""
    return f"{KEY_PREFIX}:work:{model}"


def inbox_key(gateway_id: str) -> str:
    return f"{KEY_PREFIX}:inbox:{gateway_id}"


def gateways_key() -> str:
    """SET of the ids of gateways that may hold accepted requests (sweepers look here)."""
    return f"{KEY_PREFIX}:gateways"


def gateway_alive_key(gateway_id: str) -> str:
    """Set with a TTL and renewed by a live gateway; gone: the gateway is taken for dead."""
    return f"{KEY_PREFIX}:gateway:{gateway_id}:alive"


def gateway_accepted_key(gateway_id: str) -> str:
    """HASH: the gateway's accepted requests without an outcome record yet, request id ->
    what a sweeper needs to write their outcome (``gateway.custody``)."""
    return f"{KEY_PREFIX}:gateway:{gateway_id}:accepted"


def gateway_sweeping_key(gateway_id: str) -> str:
    """HASH: a dead gateway's accepted requests a sweeper took, until their outcomes are
    committed."""
    return f"{KEY_PREFIX}:gateway:{gateway_id}:sweeping"


def gateway_sweeper_key(gateway_id: str) -> str:
    """The id of the gateway sweeping ``gateway_id``'s requests, with a TTL it renews."""
    return f"{KEY_PREFIX}:gateway:{gateway_id}:sweeper"


def gateway_fence_key(gateway_id: str) -> str:
    """Set when a sweeper took the gateway's requests: the gateway must not write their
    outcomes any more."""
    return f"{KEY_PREFIX}:gateway:{gateway_id}:fenced"


def streamed_flag_key(job_id: str) -> str:
    """Set before the first token leaves a worker: a reclaimed job with it set is not re-run."""
    return f"{KEY_PREFIX}:job:{job_id}:streamed"


def queued_key(model: str, tenant: str) -> str:
    """ZSET: a tenant's jobs for ``model`` waiting for a worker, scored by their start_by."""
    return f"{KEY_PREFIX}:queued:{model}:{tenant}"


def starts_key(model: str, minute: int) -> str:
    """How many jobs for ``model`` workers started in one minute (unix time // 60)."""
    return f"{KEY_PREFIX}:starts:{model}:{minute}"


CANCEL_KEY_PREFIX = f"{KEY_PREFIX}:job:"
CANCEL_KEY_SUFFIX = ":cancel"


def cancel_key(job_id: str) -> str:
    """Set when the client went away, so a worker that claims the job later skips it."""
    return f"{CANCEL_KEY_PREFIX}{job_id}{CANCEL_KEY_SUFFIX}"


def workers_index_key() -> str:
    """Sorted set of worker ids scored by their last heartbeat (unix seconds)."""
    return f"{KEY_PREFIX}:workers"


def worker_info_key(worker_id: str) -> str:
    return f"{KEY_PREFIX}:worker:{worker_id}"


class WorkerInfo(msgspec.Struct, frozen=True):
    """What a worker announces in its heartbeat."""

    worker_id: str
    model: str
    max_context: int
    weights_digest: str
    capacity: int
    running: int
    pid: int
    heartbeat_at: float
    draining: bool = False
    architecture: str = ""
    tool_parser: str = ""
    """The parser of the model's tool-call syntax, if the operator configured one."""
    can_insert: bool = False
    """The model fills in the middle (a FIM template is configured)."""
    task: str = "generate"
    """``generate`` (chat and completions) or ``embed`` (a pooling model: embeddings only)."""
    embedding_size: int = 0
    """The length of the vectors an ``embed`` worker returns."""


class ModelCard(msgspec.Struct, frozen=True):
    """What a worker's model says of itself, for /api/show. Kept apart from the heartbeat,
    which a worker sends after every job and gateways read every second."""

    chat_template: str = ""
    generation_defaults: dict[str, Any] = msgspec.field(default_factory=dict)
    fim_template: str = ""


def model_card_key(worker_id: str) -> str:
    return f"{KEY_PREFIX}:worker:{worker_id}:card"


_info_decoder = msgspec.json.Decoder(WorkerInfo)
_card_decoder = msgspec.json.Decoder(ModelCard)


def encode_worker_info(info: WorkerInfo) -> bytes:
    return msgspec.json.encode(info)


def decode_worker_info(data: bytes) -> WorkerInfo:
    return _info_decoder.decode(data)


def encode_model_card(card: ModelCard) -> bytes:
    return msgspec.json.encode(card)


def decode_model_card(data: bytes) -> ModelCard:
    return _card_decoder.decode(data)
