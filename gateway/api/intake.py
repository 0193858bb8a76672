"""What every inference endpoint does with an incoming request before its own work.

Authenticate, read the body within the size limit, and audit any refusal; race slow work
against the client going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import anyio
from litestar import Request
from litestar.exceptions import ClientException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from gateway.audit.records import AuditEntry
from gateway.auth.api_keys import bearer_token
from gateway.auth.authenticator import Authenticator
from gateway.auth.principal import Principal
from gateway.errors import ClientDisconnected, EnclaveError, InvalidRequest, PayloadTooLarge
from gateway.inference import InferenceRequest, InferenceService, JobRun
from gateway.logs import request_context
from gateway.schemas.decoding import decode_body
from gateway.telemetry import span

T = TypeVar("T")
S = TypeVar("S")
B = TypeVar("B")


def new_request_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Gate:
    """What an inference endpoint needs of the app, as one dependency.

    Litestar resolves two or more dependencies of a handler in an anyio task group, a task
    each; at load that cost about 8% of the gateway's CPU per request. One dependency is
    awaited in place.
    """

    inference: InferenceService
    authenticator: Authenticator
    max_body_bytes: int
    ollama_aliases: Mapping[str, str]
    """Ollama model names and the Enclave models they stand for."""


@dataclass
class Intake:
    request_id: str
    endpoint: str
    principal: Principal | None = None


@contextlib.asynccontextmanager
async def audited(
    inference: InferenceService, request_id: str, endpoint: str
) -> AsyncIterator[Intake]:
    """Audit every refusal raised inside the block that no other record covers yet."""
    intake = Intake(request_id=request_id, endpoint=endpoint)
    try:
        with request_context(request_id):
            yield intake
    except EnclaveError as exc:
        if not exc.is_audited:
            await inference.refuse(intake.principal, request_id, endpoint, exc)
            exc.is_audited = True
        # As OpenAI does: a refused request names itself too, so its client can find the
        # audit record that covers it.
        exc.headers = {**exc.headers, "x-request-id": request_id}
        raise


async def authenticate(
    request: Request[Any, Any, Any], authenticator: Authenticator, intake: Intake
) -> Principal:
    principal = await authenticator.authenticate(bearer_token(request.headers.get("authorization")))
    intake.principal = principal
    return principal


def anyone(principal: Principal) -> Principal:
    """The ``require`` of a call every authenticated caller may make."""
    return principal


@contextlib.asynccontextmanager
async def authorized_call(
    request: Request[Any, Any, Any],
    inference: InferenceService,
    authenticator: Authenticator,
    endpoint: str,
    kind: str,
    require: Callable[[Principal], S],
) -> AsyncIterator[tuple[Intake, S]]:
    """Authenticate the caller and check its rights with ``require`` (a request id of
    ``kind``); every refusal raised inside the block is audited."""
    async with audited(inference, new_request_id(kind), endpoint) as intake:
        with span(inference.tracer, "authenticate"):
            principal = await authenticate(request, authenticator, intake)
        yield intake, require(principal)


async def record_action(
    inference: InferenceService,
    intake: Intake,
    *,
    target: str,
    change: dict[str, Any],
    status: int = 200,
    event: Literal["admin", "audit"] = "admin",
) -> None:
    """Audit an administrative action (or an auditor's look at the log) by the authenticated
    caller; raises AuditUnavailable.

    Call it before committing the change or answering: no record, no change, no answer.
    """
    principal = intake.principal
    await inference.audit.append(
        AuditEntry(
            request_id=intake.request_id,
            event=event,
            endpoint=intake.endpoint,
            status=status,
            tenant_id=principal.tenant_id if principal else None,
            user_id=principal.user_id if principal else None,
            key_id=principal.key_id if principal else None,
            target=target,
            change=change,
        )
    )


async def read_body(request: Request[Any, Any, Any], max_bytes: int) -> bytes:
    try:
        return await request.body()
    except RequestEntityTooLarge:
        raise PayloadTooLarge(f"The request body exceeds the limit of {max_bytes} bytes.") from None
    except ClientException as exc:
        raise InvalidRequest(str(exc.detail)) from None


async def _wait_for_disconnect(request: Request[Any, Any, Any]) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Await ``work``; cancel it and raise ClientDisconnected if the client goes away first.

    ``work`` runs in the calling task, and a watcher cancels that task if the client leaves:
    no task of its own for the work and no ``asyncio.wait`` (two of each per request cost
    about 4% of the gateway's CPU at load)."""
    task = asyncio.current_task()
    assert task is not None
    watching = True
    left = False

    def on_watcher_done(watcher: asyncio.Future[None]) -> None:
        nonlocal left
        if watching and not watcher.cancelled():
            watcher.exception()  # retrieved: whatever ended the watch, the client is gone
            left = True
            task.cancel()

    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    watcher.add_done_callback(on_watcher_done)
    try:
        return await work
    except BaseException:
        if left and task.uncancel() == 0:  # cancelled by the watcher alone
            raise ClientDisconnected from None
        raise
    finally:
        watching = False
        watcher.cancel()


QUEUE_TIMEOUT_HEADER = "x-enclave-queue-timeout"
MAX_QUEUE_TIMEOUT_S = 600.0


def queue_timeout(value: str) -> float:
    """The header's seconds to wait for a worker: a number above 0, at most 600."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_QUEUE_TIMEOUT_S:  # also refuses nan and inf
        raise InvalidRequest(
            f"{QUEUE_TIMEOUT_HEADER} must be a number of seconds above 0 and at most "
            f"{MAX_QUEUE_TIMEOUT_S:g}.",
            param=QUEUE_TIMEOUT_HEADER,
        )
    return seconds


@contextlib.asynccontextmanager
async def received(
    request: Request[Any, Any, Any],
    gate: Gate,
    *,
    endpoint: str,
    id_prefix: str,
    schema: type[B],
    max_body_bytes: int | None = None,
) -> AsyncIterator[tuple[Intake, Principal, B]]:
    """Authenticate and parse (a body of at most ``max_body_bytes``, by default the gate's);
    every refusal raised inside the block is audited."""
    async with authorized_call(
        request, gate.inference, gate.authenticator, endpoint, id_prefix, anyone
    ) as (intake, principal):
        limit = gate.max_body_bytes if max_body_bytes is None else max_body_bytes
        body = decode_body(await read_body(request, limit), schema)
        yield intake, principal, body


async def start(
    request: Request[Any, Any, Any],
    inference: InferenceService,
    intake: Intake,
    principal: Principal,
    job: InferenceRequest,
) -> JobRun:
    """Audit and enqueue ``job``; return once a worker has started it."""
    waiting = request.headers.get(QUEUE_TIMEOUT_HEADER)
    if waiting is not None:
        job = dataclasses.replace(job, queue_timeout_s=queue_timeout(waiting))
    return await unless_disconnected(request, inference.open(principal, intake.request_id, job))


async def admit(
    request: Request[Any, Any, Any],
    gate: Gate,
    *,
    endpoint: str,
    id_prefix: str,
    schema: type[B],
    convert: Callable[[B], InferenceRequest],
) -> tuple[B, InferenceRequest, JobRun]:
    """Authenticate, parse, audit and enqueue; return once a worker has started the job."""
    async with received(request, gate, endpoint=endpoint, id_prefix=id_prefix, schema=schema) as (
        intake,
        principal,
        body,
    ):
        job = convert(body)
        run = await start(request, gate.inference, intake, principal, job)
    return body, job, run


async def collect(request: Request[Any, Any, Any], run: JobRun) -> None:
    """Wait for the whole answer; a client that leaves meanwhile cancels the job."""
    try:
        await unless_disconnected(request, run.collect())
    except ClientDisconnected:
        await run.abandon()
        raise


async def abandon_unless_settled(run: JobRun) -> None:
    """End of a stream: if it ended early (the client went away), cancel and record it."""
    if not run.is_settled:
        with anyio.CancelScope(shield=True):  # the stream's own scope is being cancelled
            await run.abandon()
