"""The inference service: route a validated request to a worker and account for it.

pick model → audit "accepted" (fail closed) → enqueue (registering the request with this
gateway's custody) → wait for the worker's first event → relay deltas → audit "outcome"
(exactly once, however the request ends; by another gateway if this one dies first, see
``gateway.custody``)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

import msgspec
from opentelemetry import trace

from gateway.audit.content import ContentVault
from gateway.audit.records import AUDIT_UNWRITABLE, AuditEntry, AuditLog
from gateway.auth.principal import Principal
from gateway.custody import GATEWAY_LOST, OutcomeCustody, registry_value
from gateway.errors import (
    AuditUnavailable,
    ContextLengthExceeded,
    EnclaveError,
    GatewayTimeout,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    OverCapacity,
    ServiceUnavailable,
    UpstreamFailed,
)
from gateway.logs import request_context
from gateway.metrics import GatewayMetrics
from gateway.queue.client import CLIENT_TOO_SLOW, RedisJobQueue
from gateway.queue.protocol import (
    FIFO_QUEUE,
    ChatMessage,
    Delta,
    Embedded,
    EmbedInputs,
    Event,
    Failed,
    Finished,
    Job,
    Priority,
    SamplingOptions,
    Started,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Tools,
    WorkerInfo,
)
from gateway.queue.schedule import estimated_tokens
from gateway.quotas.admission import Decision
from gateway.quotas.service import Quotas, ratelimit_headers
from gateway.telemetry import current_context_carrier, span

logger = logging.getLogger("enclave.inference")

CLIENT_CLOSED = 499  # nginx's status for a client that went away
_LOST = (
    "This gateway stopped answering for a while and its requests were recorded as lost; "
    "the response is incomplete. Retry the request."
)


@dataclass(frozen=True)
class InferenceRequest:
    endpoint: str
    model: str
    kind: Literal["chat", "completion", "embed"]
    sampling: SamplingOptions
    messages: tuple[ChatMessage, ...] = ()
    prompt: str = ""
    echo: bool = False
    queue_timeout_s: float | None = None
    """How long this request may wait for a worker (None: the configured default)."""
    service_tier: str | None = None
    """OpenAI's ``service_tier``: ``flex`` asks for the batch class (see ``priority_of``)."""
    tools: Tools | None = None
    suffix: str | None = None
    """Fill in between ``prompt`` and this (a completion on a model with a FIM template)."""
    embed: EmbedInputs | None = None
    """The inputs of an ``embed`` request."""

    @cached_property
    def text(self) -> str:
        """The prompt as sent to the worker (messages as canonical JSON, with the tools
        offered if any; an embed request's inputs as JSON); computed once for the quota
        reservation, the sealed copy and the digest of both audit records."""
        if self.embed is not None:
            return msgspec.json.encode(self.embed.inputs).decode()
        if self.kind != "chat":
            if self.suffix is None:
                return self.prompt
            return msgspec.json.encode({"prompt": self.prompt, "suffix": self.suffix}).decode()
        if self.tools is None:
            return msgspec.json.encode(self.messages).decode()
        return msgspec.json.encode({"messages": self.messages, "tools": self.tools}).decode()

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the prompt as sent to the worker (``text``)."""
        return hashlib.sha256(self.text.encode()).hexdigest()


def priority_of(principal: Principal, service_tier: str | None) -> Priority:
    """The class a request waits in: its tenant's, or batch if it asks for ``flex``. A
    request cannot rise above its tenant's class."""
    return "batch" if service_tier == "flex" else principal.priority


def service_tier_of(priority: Priority) -> str:
    """What the response's ``service_tier`` reports for the class the request waited in."""
    return "flex" if priority == "batch" else "default"


def error_from_failed(event: Failed) -> EnclaveError:
    """Rebuild the worker's error as the matching class of the error tree."""
    kinds: dict[int, type[EnclaveError]] = {400: InvalidRequest, 404: NotFound}
    if event.code == "context_length_exceeded":
        return ContextLengthExceeded(event.message, param=event.param)
    if event.status == 503:
        return ServiceUnavailable(event.message, code=event.code)
    return kinds.get(event.status, UpstreamFailed)(
        event.message, code=event.code, param=event.param
    )


def check_task(worker: WorkerInfo, model: str, kind: str) -> None:
    """An embedding model serves only embeddings (``kind`` embed), a generative model
    everything else."""
    if (worker.task == "embed") == (kind == "embed"):
        return
    if worker.task == "embed":
        message = (
            f"The model `{model}` is an embedding model; it does not support chat or completions."
        )
    else:
        message = f"The model `{model}` does not support embeddings."
    raise InvalidRequest(message, code="model_not_supported", param="model")


@dataclass
class JobRun:
    """One accepted request in flight; settles its audit outcome exactly once."""

    request_id: str
    started: Started
    _events: AsyncIterator[Event]
    _service: InferenceService
    _principal: Principal
    _request: InferenceRequest
    _started_at: float
    text_parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    is_settled: bool = False
    limits: Decision | None = None
    """The admission decision: what the x-ratelimit-* headers report."""
    priority: Priority = "interactive"
    first_token_at: float | None = None
    """perf_counter() when the first text arrived (``_started_at`` is on the same clock)."""
    tool_call_parts: list[ToolCallDelta] = field(default_factory=list)
    choice_parts: dict[int, list[str]] = field(default_factory=dict)
    """Text of the choices after the first (``n`` > 1), by index."""
    logprob_parts: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    finish_reasons: tuple[str, ...] = ()
    vectors: list[bytes] = field(default_factory=list)
    """An embed job's vectors (float32 little-endian), one per input."""
    is_registered: bool = False
    """Its enqueue returned: it is in this gateway's registry of accepted requests."""
    is_lost: bool = False
    """Another gateway took this one for dead and recorded the request as lost."""

    @property
    def ratelimit_headers(self) -> dict[str, str]:
        return ratelimit_headers(self.limits)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def choice_text(self, index: int) -> str:
        return self.text if index == 0 else "".join(self.choice_parts.get(index, ()))

    def choice_finish_reason(self, index: int) -> str:
        reasons = self.finish_reasons or (self.finish_reason or "stop",)
        return reasons[index] if index < len(reasons) else "stop"

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The calls streamed so far, their pieces joined."""
        calls: dict[int, ToolCall] = {}
        for part in self.tool_call_parts:
            call = calls.get(part.index)
            if call is None:
                calls[part.index] = ToolCall(part.id, part.name, part.arguments)
            else:
                calls[part.index] = ToolCall(call.id, call.name, call.arguments + part.arguments)
        return [calls[i] for i in sorted(calls)]

    @property
    def answer(self) -> str:
        """What the outcome record digests (and seals): the text; with tool calls, or several
        choices, a JSON object of them all; an embed job's vectors as a JSON list of base64
        strings, exactly as ``encoding_format: base64`` returns them."""
        if self.vectors:
            return msgspec.json.encode(self.vectors).decode()  # msgspec writes bytes as base64
        if self._request.sampling.n > 1:
            choices = [self.choice_text(i) for i in range(self._request.sampling.n)]
            return msgspec.json.encode({"choices": choices}).decode()
        if not self.tool_call_parts:
            return self.text
        return msgspec.json.encode({"content": self.text, "tool_calls": self.tool_calls}).decode()

    async def deltas(self) -> AsyncIterator[str]:
        """Yield text as it arrives; raise the worker's error if it fails mid-way."""
        async for delta in self.updates():
            if delta.text:
                yield delta.text

    async def updates(self) -> AsyncIterator[Delta]:
        """Yield the worker's deltas (text and tool-call pieces) as they arrive; raise the
        worker's error if it fails mid-way."""
        self.prompt_tokens = self.started.prompt_tokens
        try:
            async for event in self._events:
                if isinstance(event, Delta):
                    if self.first_token_at is None:
                        self.first_token_at = time.perf_counter()
                    if event.index == 0:
                        self.text_parts.append(event.text)
                    else:
                        self.choice_parts.setdefault(event.index, []).append(event.text)
                    if event.logprobs:
                        self.logprob_parts.setdefault(event.index, []).extend(event.logprobs)
                    self.tool_call_parts.extend(event.tool_calls)
                    self.completion_tokens = event.completion_tokens
                    yield event
                elif isinstance(event, Finished):
                    await self._finish(event)
                elif isinstance(event, Failed):
                    await self.settle(event.status, event.code)
                    raise error_from_failed(event)
                elif isinstance(event, Embedded):
                    self.vectors = event.vectors
        except GatewayTimeout:
            await self.abandon(504, "request_timeout")
            raise

    async def _finish(self, event: Finished) -> None:
        self.finish_reason = event.finish_reason
        self.finish_reasons = event.finish_reasons or (event.finish_reason,)
        self.prompt_tokens = event.prompt_tokens
        self.completion_tokens = event.completion_tokens
        await self.settle(200)
        if self.is_lost:  # the client must not see a success that the log denies
            lost = UpstreamFailed(_LOST, code=GATEWAY_LOST)
            lost.is_audited = True
            raise lost

    async def collect(self) -> str:
        async for _ in self.updates():
            pass
        return self.text

    async def settle(self, status: int, error_code: str | None = None) -> None:
        if self.is_settled:
            return
        self.is_settled = True
        await self._service.record_outcome(self, status, error_code)

    async def too_slow(self) -> None:
        """The client fell too far behind and the queue stopped its job: record the outcome
        now, not when (if ever) the client reads again."""
        await self.settle(CLIENT_CLOSED, CLIENT_TOO_SLOW)

    async def abandon(self, status: int = CLIENT_CLOSED, code: str = "client_closed") -> None:
        """The client went away (or waited too long): stop the worker, record the outcome."""
        if not self.is_settled:
            await self._service.queue.cancel(self.request_id)
            await self.settle(status, code)


class InferenceService:
    def __init__(
        self,
        queue: RedisJobQueue,
        audit: AuditLog,
        vault: ContentVault | None = None,
        quotas: Quotas | None = None,
        *,
        start_timeout_s: float = 30.0,
        max_queued_per_tenant: int = 100,
        scheduling: Literal["fair", "fifo"] = "fair",
        tracer: trace.Tracer | None = None,
        metrics: GatewayMetrics | None = None,
        custody: OutcomeCustody | None = None,
    ) -> None:
        self.queue = queue
        self.custody = custody
        self.metrics = metrics
        self.audit = audit
        self.vault = vault
        self.quotas = quotas
        self.start_timeout_s = start_timeout_s
        self.max_queued_per_tenant = max_queued_per_tenant
        self.scheduling = scheduling
        self.tracer = tracer or trace.NoOpTracer()

    async def find_worker(self, model: str, principal: Principal) -> WorkerInfo:
        """A live worker for ``model``; a model the tenant may not use does not exist for it."""
        workers = [w for w in await self.queue.live_workers() if w.model == model]
        if not workers or not principal.may_use(model):
            raise ModelNotFound(
                f"The model `{model}` does not exist or is not being served.", param="model"
            )
        return max(workers, key=lambda w: w.max_context)

    async def open(
        self, principal: Principal, request_id: str, request: InferenceRequest
    ) -> JobRun:
        """Admit, audit and enqueue; return once the worker has started the job."""
        opened_at = time.perf_counter()
        worker = await self.find_worker(request.model, principal)
        check_task(worker, request.model, request.kind)
        max_tokens = 0 if request.kind == "embed" else request.sampling.max_tokens
        if max_tokens is not None and request.sampling.max_tokens_is_cap:
            max_tokens = min(max_tokens, worker.max_context - 1)  # the context bounds it
        elif max_tokens is not None and max_tokens >= worker.max_context:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {worker.max_context} tokens. "
                f"However, you requested {max_tokens} tokens for the completion alone.",
                param="max_tokens",
            )
        if await self.queue.queued(request.model, principal.tenant_id) >= (
            self.max_queued_per_tenant
        ):
            raise OverCapacity(
                f"Your tenant has {self.max_queued_per_tenant} requests waiting for "
                f"{request.model} already; retry later.",
                code="queue_full",
                retry_after_s=await self.queue.wait_estimate_s(request.model),
            )
        with span(self.tracer, "admission"):
            limits = await self._admit(principal, request_id, request, max_tokens)
        run = JobRun(request_id, _placeholder, _no_events(), self, principal, request, opened_at)
        is_accepted = False
        try:
            with span(self.tracer, "audit"):
                entry = self._entry(principal, request_id, request, "accepted", 202)
                sealed = await self._seal(principal, request_id, "prompt", request.text)
                await self.audit.append(replace(entry, prompt_sealed=sealed))
            is_accepted = True
            with span(self.tracer, "enqueue", {"enclave.request_id": request_id}):
                job = Job(
                    id=request_id,
                    model=request.model,
                    kind=request.kind,
                    reply_to=self.queue.inbox,
                    reads_batches=True,
                    tenant=principal.tenant_id,
                    sampling=request.sampling,
                    enqueued_at=time.time(),
                    messages=request.messages,
                    prompt=request.prompt,
                    echo=request.echo,
                    tools=request.tools,
                    suffix=request.suffix,
                    embed=request.embed,
                    trace=current_context_carrier(),
                    start_by=time.time() + (request.queue_timeout_s or self.start_timeout_s),
                    **self._schedule(principal, request),
                )
                run._events = await self.queue.submit(
                    job, on_overflow=run.too_slow, registry=self._registry(entry)
                )
                run.is_registered = self.custody is not None
        except BaseException as exc:
            await self._not_queued(run, exc, is_accepted)
            raise
        run.limits = limits
        run.priority = job.priority
        try:
            async with asyncio.timeout(max(0.0, job.start_by - time.time())):
                run.started = await self._first_event(run, run._events)
        except TimeoutError:  # no worker took it in time: it will never start
            await run.abandon(503, "queue_timeout")
            waited = OverCapacity(
                f"Every worker for {request.model} stayed busy for as long as this request "
                "could wait; it was not started.",
                code="queue_timeout",
                retry_after_s=await self.queue.wait_estimate_s(request.model),
            )
            waited.is_audited = True  # its outcome record says so
            raise waited from None
        except EnclaveError as exc:
            exc.is_audited = True
            raise
        except BaseException:  # the client went away while the job was queued
            await run.abandon()
            raise
        finally:
            if run.started is _placeholder:  # no worker took it (one that does unqueues it)
                await self.queue.unqueue(job)
        return run

    async def _not_queued(self, run: JobRun, exc: BaseException, is_accepted: bool) -> None:
        """The job never reached the queue. An accepted request still gets its one outcome
        record (and a cancel, in case Redis took the job but its answer was lost); any
        other gives its quota reservation back."""
        if not is_accepted:
            if self.quotas is not None:
                await self.quotas.settle(run.request_id, 0)
            return
        if isinstance(exc, EnclaveError):
            await run.abandon(exc.status, exc.code)
            exc.is_audited = True  # the outcome record says so
        else:
            await run.abandon()  # the client went away meanwhile

    async def _admit(
        self,
        principal: Principal,
        request_id: str,
        request: InferenceRequest,
        max_tokens: int | None,
    ) -> Decision | None:
        """The quota decision (raises the refusal); None without quotas."""
        if self.quotas is None:
            return None
        reserved = max_tokens * request.sampling.n if max_tokens is not None else None
        return await self.quotas.admit(principal, request_id, request.text, reserved)

    def _registry(self, accepted: AuditEntry) -> tuple[str, bytes] | None:
        """Where the enqueue registers the request, so another gateway can write its
        outcome if this one dies (``gateway.custody``); None without custody."""
        if self.custody is None:
            return None
        return self.custody.registry_key, registry_value(accepted)

    def _schedule(self, principal: Principal, request: InferenceRequest) -> dict[str, Any]:
        """Where the job waits: its tenant's queue in its class, or one queue in FIFO order."""
        if self.scheduling == "fifo":
            return {"queue": FIFO_QUEUE, "cost": estimated_tokens(request.text)}
        return {
            "priority": priority_of(principal, request.service_tier),
            "queue": principal.tenant_id,
            "weight": principal.weight,
            "cost": estimated_tokens(request.text),
        }

    @staticmethod
    async def _first_event(run: JobRun, events: AsyncIterator[Event]) -> Started:
        try:
            first = await anext(events)
        except GatewayTimeout:
            await run.abandon(504, "request_timeout")
            raise
        if isinstance(first, Failed):
            await run.settle(first.status, first.code)
            raise error_from_failed(first)
        if not isinstance(first, Started):  # the protocol sends Started first
            await run.abandon(502, "protocol_error")
            raise UpstreamFailed("The worker answered out of order.")
        return first

    async def record_outcome(self, run: JobRun, status: int, error_code: str | None) -> None:
        if self.quotas is not None:
            await self.quotas.settle(run.request_id, run.prompt_tokens + run.completion_tokens)
        entry = self._entry(run._principal, run.request_id, run._request, "outcome", status)
        ended_at = time.perf_counter()
        latency_ms = int((ended_at - run._started_at) * 1000)
        self._measure(run, status, error_code, ended_at)
        answer = run.answer
        entry = AuditEntry(
            **{
                **entry.__dict__,
                "weights_digest": run.started.weights_digest or None,
                "worker_id": run.started.worker_id or None,
                "error_code": error_code,
                "finish_reason": run.finish_reason,
                "prompt_tokens": run.prompt_tokens,
                "completion_tokens": run.completion_tokens,
                "latency_ms": latency_ms,
                "answer_sha256": hashlib.sha256(answer.encode()).hexdigest(),
            }
        )
        try:
            sealed = await self._seal(run._principal, run.request_id, "answer", answer)
        except EnclaveError:  # the outcome matters more than keeping the answer's text
            sealed = None
        if self.custody is not None and not await self.custody.may_write_outcome(
            run.request_id, is_registered=run.is_registered
        ):
            run.is_lost = True  # a sweeper recorded it as gateway_lost: one record only
            return
        await self.audit.append_or_owe(replace(entry, answer_sealed=sealed))
        with request_context(run.request_id):
            logger.info(
                "%s %s: %d (%s), %d prompt + %d completion tokens, %d ms",
                run._request.endpoint,
                run._request.model,
                status,
                error_code or run.finish_reason,
                run.prompt_tokens,
                run.completion_tokens,
                latency_ms,
            )

    def _measure(self, run: JobRun, status: int, error_code: str | None, ended_at: float) -> None:
        if self.metrics is None:
            return
        first = run.first_token_at
        self.metrics.finished(
            endpoint=run._request.endpoint,
            model=run._request.model,
            tenant=run._principal.tenant_id,
            status=status,
            duration_s=ended_at - run._started_at,
            first_token_s=first - run._started_at if first is not None else None,
            output_tokens=run.completion_tokens,
            decode_s=ended_at - first if first is not None else None,
        )
        if error_code == "queue_timeout":  # admitted, but no worker was free in time
            self.metrics.refused_admission(tenant=run._principal.tenant_id, reason=error_code)

    async def _seal(
        self, principal: Principal, request_id: str, field: str, text: str
    ) -> dict[str, Any] | None:
        """``text`` sealed for the record when the tenant keeps content; fails closed."""
        if not principal.keep_content or self.vault is None:
            return None
        try:
            return await self.vault.seal(
                self.audit.pseudonym(principal.user_id),
                principal.tenant_id,
                text,
                f"{request_id}:{field}",
            )
        except Exception as exc:
            logger.error("sealing content failed: %s", type(exc).__name__)
            raise AuditUnavailable(AUDIT_UNWRITABLE) from exc

    async def refuse(
        self, principal: Principal | None, request_id: str, endpoint: str, error: EnclaveError
    ) -> None:
        """Audit a refusal. A failing audit store does not mask the client's own error: the
        record is written once the store is back."""
        reason = str(getattr(error, "reason", None) or error.code)
        if self.metrics is not None:
            self.metrics.refused(
                endpoint=endpoint,
                tenant=principal.tenant_id if principal else "",
                status=error.status,
                reason=reason,
            )
        entry = AuditEntry(
            request_id=request_id,
            event="refused",
            endpoint=endpoint,
            status=error.status,
            error_code=reason,
            tenant_id=principal.tenant_id if principal else None,
            user_id=principal.user_id if principal else None,
            key_id=principal.key_id if principal else None,
        )
        if isinstance(error, AuditUnavailable):
            self.audit.owe(entry)  # the store just failed: written once it is back
        else:
            await self.audit.append_or_owe(entry)

    @staticmethod
    def _entry(
        principal: Principal,
        request_id: str,
        request: InferenceRequest,
        event: Literal["accepted", "outcome"],
        status: int,
    ) -> AuditEntry:
        return AuditEntry(
            request_id=request_id,
            event=event,
            endpoint=request.endpoint,
            status=status,
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            key_id=principal.key_id,
            model=request.model,
            prompt_sha256=request.digest,
        )


_placeholder = Started(job_id="", worker_id="", prompt_tokens=0, weights_digest="")


async def _no_events() -> AsyncIterator[Event]:
    """The events of a job that never reached the queue."""
    return
    yield
