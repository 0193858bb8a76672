"""Three gateway replicas and two workers on one PostgreSQL and one Redis, one worker killed
mid-run: the audit log stays one gap-free hash chain, and every accepted request has exactly
one outcome record, including the requests whose worker died.

The killed worker is a real Consumer with a FakeEngine in its own process (this module run
with ``python -m``), so SIGKILL leaves what a crash leaves: jobs claimed and never acked,
some already streaming. The survivor reruns those that had not streamed and fails those
that had (``worker_lost``); tests/e2e/test_faults.py does the same with vLLM workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.audit.chain import check_chain
from gateway.auth.api_keys import create_key
from gateway.db.migrate import upgrade_to_head
from gateway.db.models import AuditLogEntry, AuditPending
from gateway.db.session import create_engine, create_session_factory
from gateway.inference import InferenceRequest
from gateway.queue.protocol import (
    MESSAGE_FIELD,
    WORKER_GROUP,
    ChatMessage,
    SamplingOptions,
    decode_job,
    queues_key,
    streamed_flag_key,
    worker_info_key,
)
from gateway.settings import AuditSettings, Settings
from tests.fakes.engine import FakeEngine
from tests.integration.stack import run_consumer, serve, stack_settings
from workers.consumer import Consumer
from workers.engine import EngineOutput, Prompt

pytestmark = pytest.mark.integration

THIS_MODULE = "tests.integration.test_audit_replicas"
REPO = Path(__file__).resolve().parents[2]
MODEL = "fake-model"
ENDPOINT = "/v1/chat/completions"
REPLICAS = 3
REQUESTS = 60
REPLY = (
    "The capital of France is Paris, a city on the Seine known for its museums, "
    "its bridges, its cafes and its old streets."
)  # 22 tokens at 50 ms a step: a job runs about a second, long enough to die mid-stream
STEP_DELAY_S = 0.05
DOOMED = "doomed-worker"
SURVIVOR = "surviving-worker"
CLIENT_TIMEOUT_S = 60.0
LOST = (502, "worker_lost")
OK = (200, None)


class StallingEngine(FakeEngine):
    """Holds every second request before its first token, so that the killed worker
    leaves both kinds of job behind: some that had streamed, some that had not."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._calls = 0

    async def generate(
        self, request_id: str, prompt: Prompt, sampling: SamplingOptions
    ) -> AsyncGenerator[EngineOutput, None]:
        self._calls += 1
        if self._calls % 2 == 0:
            await asyncio.Event().wait()  # until the process is killed
        async for output in super().generate(request_id, prompt, sampling):
            yield output


def serve_until_killed(redis_url: str) -> None:
    """The doomed worker's process: a Consumer that is never told to stop."""

    async def run() -> None:
        engine = StallingEngine(reply=REPLY, step_delay_s=STEP_DELAY_S, capacity=4, model=MODEL)
        consumer = Consumer(
            Redis.from_url(redis_url),
            engine,
            worker_id=DOOMED,
            lease_timeout_s=1.0,  # as run_consumer's, so the survivor reclaims within a second
            worker_ttl_s=5.0,
        )
        await consumer.run(asyncio.Event())

    asyncio.run(run())


@contextlib.contextmanager
def doomed_worker(redis_url: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", THIS_MODULE, redis_url],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield process
    finally:
        process.kill()
        process.wait()


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll a condition other processes make true, with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        await asyncio.sleep(0.01)


async def held_jobs(redis: Redis, worker_id: str) -> dict[str, bool]:
    """The jobs ``worker_id`` has claimed and not acked, each with whether it has streamed."""
    held = {}
    for stream in await redis.smembers(queues_key(MODEL)):
        try:
            pending: Any = await redis.xpending_range(
                stream, WORKER_GROUP, "-", "+", 100, consumername=worker_id
            )
        except ResponseError:  # no group yet
            continue
        for entry in pending:
            entry_id = entry["message_id"]
            for _, fields in await redis.xrange(stream, entry_id, entry_id):  # gone once acked
                job = decode_job(fields[MESSAGE_FIELD])
                held[job.id] = bool(await redis.exists(streamed_flag_key(job.id)))
    return held


async def kill_once_streaming(redis: Redis, worker: subprocess.Popen[bytes]) -> dict[str, bool]:
    """SIGKILL the doomed worker once it holds a job that has streamed and one that has
    not; the jobs it held then, each with whether it had streamed."""

    async def holds_both() -> bool:
        assert worker.poll() is None, "the doomed worker exited by itself"
        return set((await held_jobs(redis, DOOMED)).values()) == {True, False}

    await until(holds_both, 30, "the doomed worker to hold streamed and unstreamed jobs")
    worker.kill()
    await asyncio.to_thread(worker.wait)
    # Read before the survivor reclaims them: that needs a lease (1 s) of silence.
    return await held_jobs(redis, DOOMED)


@dataclass(frozen=True)
class Answer:
    prompt: str
    is_stream: bool
    status: int
    error_code: str | None
    """The error envelope's code, from the body or the stream's final event."""
    text: str

    @property
    def result(self) -> tuple[int, str | None]:
        """(status, error code) as the outcome record should carry them."""
        return (502 if self.error_code == "worker_lost" else self.status, self.error_code)


def prompt_of(index: int) -> str:
    return f"Question {index}: what is the capital of France?"


def digest_of(prompt: str) -> str:
    """The ``prompt_sha256`` the gateway records for a one-message chat."""
    messages = (ChatMessage("user", prompt),)
    return InferenceRequest(ENDPOINT, MODEL, "chat", SamplingOptions(), messages).digest


async def ask(
    client: httpx.AsyncClient, base_url: str, key: str, prompt: str, is_stream: bool
) -> Answer:
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": is_stream}
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        asyncio.timeout(CLIENT_TIMEOUT_S),
        client.stream("POST", base_url + ENDPOINT, json=body, headers=headers) as response,
    ):
        if not is_stream or response.status_code != 200:
            payload = json.loads(await response.aread())
            error = payload.get("error") or {}
            text = "" if error else payload["choices"][0]["message"]["content"]
            return Answer(prompt, is_stream, response.status_code, error.get("code"), text)
        events = [
            line.removeprefix("data: ")
            async for line in response.aiter_lines()
            if line.startswith("data: ")
        ]
    chunks = [json.loads(event) for event in events if event != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if "choices" in c)
    final = events[-1] if events else "<no events>"
    error_code = None if final == "[DONE]" else json.loads(final)["error"]["code"]
    return Answer(prompt, is_stream, 200, error_code, text)


async def new_key(db: AsyncEngine) -> str:
    async with create_session_factory(db)() as session:
        return (await create_key(session, tenant="acme", user="alice")).plaintext


async def pending_count(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(AuditPending)) or 0)


async def logged(db: AsyncEngine) -> list[tuple[int, bytes]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            select(AuditLogEntry.seq, AuditLogEntry.data).order_by(AuditLogEntry.seq)
        )
        return [(seq, bytes(data)) for seq, data in rows]


@contextlib.asynccontextmanager
async def replicas(settings: Settings, count: int) -> AsyncIterator[list[str]]:
    """``count`` gateways of the real app, each with its own sequencer, on their own ports."""
    async with contextlib.AsyncExitStack() as running:
        yield [await running.enter_async_context(serve(create_app(settings))) for _ in range(count)]


async def run_through_a_crash(
    db: AsyncEngine, redis: Redis, settings: Settings, key: str, survivor: FakeEngine, logs: Path
) -> tuple[list[Answer | BaseException], dict[str, bool]]:
    """Fire every request over the replicas, kill the doomed worker mid-stream, wait for
    every answer and the sequencer; the answers (or what prevented one) and the jobs the
    dead worker held."""

    async def is_registered() -> bool:
        return bool(await redis.exists(worker_info_key(DOOMED)))

    async def is_sequenced() -> bool:
        return await pending_count(db) == 0

    with doomed_worker(settings.redis_url, logs / "doomed-worker.log") as doomed:
        await until(is_registered, 30, "the doomed worker to register")
        async with (
            run_consumer(redis, survivor, worker_id=SURVIVOR),
            replicas(settings, REPLICAS) as base_urls,
            httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client,
        ):
            asks = [
                asyncio.create_task(
                    ask(client, base_urls[i % REPLICAS], key, prompt_of(i), is_stream=i % 2 == 1)
                )
                for i in range(REQUESTS)
            ]
            held = await kill_once_streaming(redis, doomed)
            answers = await asyncio.gather(*asks, return_exceptions=True)
            await until(is_sequenced, 30, "the sequencer to drain audit_pending")
    return answers, held


def outcome_per_request(records: list[dict[str, Any]]) -> dict[str, tuple[int, str | None]]:
    """Each accepted request's one outcome (status, error code); asserts there is exactly one."""
    accepted = Counter(r["request_id"] for r in records if r["event"] == "accepted")
    outcomes: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["event"] == "outcome":
            outcomes[r["request_id"]].append(r)
    assert {rid: n for rid, n in accepted.items() if n != 1} == {}, "accepted twice"
    wrong = {rid: [o["status"] for o in outcomes[rid]] for rid in accepted}
    assert {rid: s for rid, s in wrong.items() if len(s) != 1} == {}, "not exactly one outcome"
    assert set(outcomes) <= set(accepted), "an outcome without an accepted record"
    return {rid: (o[0]["status"], o[0].get("error_code")) for rid, o in outcomes.items()}


async def test_replicas_log_each_request_once_while_a_worker_dies(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis, tmp_path: Path
) -> None:
    database_url = make_postgres_url()
    await asyncio.to_thread(upgrade_to_head, database_url)
    audit = AuditSettings(pseudonym_key_file=tmp_path / "pseudonym.key")
    settings = stack_settings(database_url, redis_url, audit=audit)
    db = create_engine(database_url)
    survivor = FakeEngine(reply=REPLY, step_delay_s=STEP_DELAY_S, capacity=8, model=MODEL)
    try:
        key = await new_key(db)
        answers, held = await run_through_a_crash(
            db, redis_client, settings, key, survivor, tmp_path
        )
        rows = await logged(db)
        assert await pending_count(db) == 0
    finally:
        await db.dispose()

    failed = {i: repr(a) for i, a in enumerate(answers) if not isinstance(a, Answer)}
    assert failed == {}, "requests without an answer"
    done = [a for a in answers if isinstance(a, Answer)]
    assert {a.result for a in done} <= {OK, LOST}, [a for a in done if a.result not in (OK, LOST)]
    assert all(a.text == REPLY for a in done if a.result == OK)
    assert all(REPLY.startswith(a.text) for a in done)  # a rerun never repeats tokens

    # One chain: seq 0..K-1, no gap, no duplicate, every link intact.
    assert [seq for seq, _ in rows] == list(range(len(rows)))
    assert check_chain(rows) is None
    records = [json.loads(data)["fields"] for _, data in rows]
    outcomes = outcome_per_request(records)

    # Every client request was accepted once; its one outcome is what its client saw.
    accepted = [r for r in records if r["event"] == "accepted"]
    refused = [a for a in done if 400 <= a.status < 500 or a.status == 503]
    assert len(accepted) == len(done) - len(refused) == REQUESTS
    assert sum(r["event"] == "refused" for r in records) == len(refused)
    request_of = {r["prompt_sha256"]: r["request_id"] for r in accepted}
    assert sorted(request_of) == sorted(digest_of(a.prompt) for a in done)
    seen = {request_of[digest_of(a.prompt)]: a.result for a in done}
    assert {rid: outcomes.get(rid) for rid in seen} == seen

    # The crash hit requests: those it had streamed failed, the others were rerun elsewhere.
    assert set(held.values()) == {True, False}, held
    expected = {rid: LOST if has_streamed else OK for rid, has_streamed in held.items()}
    assert {rid: outcomes.get(rid) for rid in held} == expected
    assert sum(a.result == LOST for a in done) == sum(held.values())  # no one else lost
    rerun_by_survivor = {rid for rid, _, _ in survivor.requests}
    assert {rid: rid in rerun_by_survivor for rid in held} == {
        rid: not has_streamed for rid, has_streamed in held.items()
    }


if __name__ == "__main__":
    serve_until_killed(sys.argv[1])
