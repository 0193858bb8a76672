"""Redis stopped and started again (with its data) under 50 concurrent streaming clients.

The Redis server is this test's own, with an append-only file fsynced on every write
(``tests/faults/servers.py``), so the jobs and events it had accepted survive the restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.records import AuditEntry, AuditLog
from gateway.queue.schedule import Scheduler, Taken
from gateway.settings import QueueSettings
from tests.fakes.engine import FakeEngine
from tests.faults.conftest import StartLoad
from tests.faults.load import (
    envelope_faults,
    no_pending_jobs,
    numbered_reply,
    outcome_faults,
    poll,
    stream_chat,
    text_faults,
)
from tests.faults.servers import RestartableRedis
from tests.integration.stack import open_stack, run_consumer

pytestmark = pytest.mark.integration

CLIENTS = 50
RECOVERY_BOUND_S = 5.0
REFUSAL_BOUND_S = {"terminate": 5.0, "kill": 5.0, "freeze": 15.0}
"""How soon a request sent while Redis is away gets its 503; a hung server costs redis-py's
socket timeout (5 s) per command that meets it."""


@pytest.mark.parametrize("how", ["terminate", "kill", "freeze"])
async def test_redis_restarted_under_load_loses_and_duplicates_nothing(
    make_postgres_url: Callable[[], str], tmp_path: Path, how: str, start_load: StartLoad
) -> None:
    """Stopped cleanly (SIGTERM), killed (SIGKILL: connections reset mid-command), or hung
    (SIGSTOP, then SIGCONT: connections stay open and nothing answers meanwhile). Two
    workers: the outage outlasts the lease, so once Redis is back each sees the other's
    running jobs idle past it, and must leave them to their worker."""
    redis_server = RestartableRedis(tmp_path)
    redis_server.start()
    engine = FakeEngine(reply=numbered_reply, step_delay_s=0.05, capacity=32, max_context=4096)
    other = FakeEngine(reply=numbered_reply, step_delay_s=0.05, capacity=32, max_context=4096)
    try:
        async with (
            open_stack(make_postgres_url(), redis_server.url, engine) as stack,
            run_consumer(stack.redis, other, worker_id="worker-2"),
        ):
            key = await stack.key()
            load = start_load(stack.client, key, CLIENTS)
            await poll(
                lambda: engine.num_unfinished() >= 10 and other.num_unfinished() >= 10,
                timeout_s=30,
                what="streams on both workers",
            )

            if how == "freeze":
                redis_server.freeze()
            else:
                await asyncio.to_thread(redis_server.stop, kill=how == "kill")
            # The load's clients are all mid-stream: others arrive while Redis is away.
            refused = await asyncio.gather(*(stream_chat(stack.client, key) for _ in range(20)))
            if how == "freeze":
                redis_server.thaw()
            else:
                await asyncio.to_thread(redis_server.start)
            back_at = time.monotonic()
            recovery_s = await poll(
                lambda: any(r.is_complete for r in load.since(back_at)),
                timeout_s=30,
                what="a request sent after the restart to complete",
            )
            probe = await stream_chat(stack.client, key)
            replies = await load.stop()
            print(
                f"{len(replies)} requests; served again {recovery_s:.2f} s after Redis came "
                f"back; statuses {sorted(Counter(r.status for r in replies).items(), key=str)}"
            )

            assert [r.failure for r in replies if r.failure] == []  # no hang, no reset
            assert {r.status for r in replies} <= {200, 503}, Counter(
                (r.status, r.error and r.error["code"]) for r in replies
            )
            assert {r.status for r in refused} == {503}, [(r.status, r.error) for r in refused]
            assert max(r.ended_at - r.sent_at for r in refused) < REFUSAL_BOUND_S[how]
            assert envelope_faults([*refused, *replies]) == []
            accepted_streams = [r for r in replies if r.status == 200]
            assert [r.error for r in accepted_streams if not r.is_complete] == []
            assert text_faults(replies) == []
            assert recovery_s < RECOVERY_BOUND_S
            assert probe.is_complete, (probe.status, probe.error)
            await poll(
                lambda: no_pending_jobs(stack.redis),
                timeout_s=5,
                what="no job left pending",
            )
            rows = await stack.audit_rows()
            assert outcome_faults(rows) == []
            accepted = {r.request_id for r in rows if r.event == "accepted"}
            complete = {r.request_id for r in replies if r.is_complete}
            assert complete <= accepted
            assert len(complete) > CLIENTS  # the load ran before, and after, the outage
    finally:
        redis_server.stop()


async def test_a_request_accepted_as_redis_goes_away_gets_its_one_outcome_record(
    make_postgres_url: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the load above runs into now and then, pinned: Redis stops between the
    request's accepted record and its enqueue."""
    redis_server = RestartableRedis(tmp_path)
    redis_server.start()
    write = AuditLog.append

    async def stop_redis_once_accepted(log: AuditLog, entry: AuditEntry) -> None:
        await write(log, entry)
        if entry.event == "accepted":
            await asyncio.to_thread(redis_server.stop)

    engine = FakeEngine(reply=numbered_reply)
    try:
        async with open_stack(make_postgres_url(), redis_server.url, engine) as stack:
            key = await stack.key()
            monkeypatch.setattr(AuditLog, "append", stop_redis_once_accepted)
            refused = await stream_chat(stack.client, key)
            monkeypatch.undo()
            rows = await stack.audit_rows()
            await asyncio.to_thread(redis_server.start)
            await poll(lambda: engine.num_unfinished() == 0, timeout_s=5, what="an idle engine")
    finally:
        redis_server.stop()
    assert (refused.status, refused.error and refused.error["code"]) == (503, "queue_unavailable")
    assert envelope_faults([refused]) == []
    assert [(r.event, r.status, r.error_code) for r in rows if r.event != "admin"] == [
        ("accepted", 202, None),
        ("outcome", 503, "queue_unavailable"),
    ]
    assert engine.requests == []


async def test_a_job_picked_as_redis_goes_away_runs_once_it_is_back(
    make_postgres_url: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pinned too: Redis stops between the worker's pick and its checks before starting the
    job; the job has not started, so it must not fail for that (it did: 502 worker_error)."""
    redis_server = RestartableRedis(tmp_path)
    redis_server.start()
    pick = Scheduler.pick
    stopped = asyncio.Event()

    async def pick_then_stop_redis(scheduler: Scheduler, *args: Any) -> list[Taken]:
        taken = await pick(scheduler, *args)
        if taken and not stopped.is_set():
            await asyncio.to_thread(redis_server.stop)
            stopped.set()
        return taken

    engine = FakeEngine(reply=numbered_reply)
    try:
        async with open_stack(make_postgres_url(), redis_server.url, engine) as stack:
            key = await stack.key()
            monkeypatch.setattr(Scheduler, "pick", pick_then_stop_redis)
            request = asyncio.create_task(stream_chat(stack.client, key))
            await asyncio.wait_for(stopped.wait(), 10)
            await asyncio.to_thread(redis_server.start)
            reply = await request
            rows = await stack.audit_rows()
    finally:
        redis_server.stop()
    assert reply.is_complete, reply
    assert text_faults([reply]) == []
    outcomes = [(r.status, r.error_code) for r in rows if r.event == "outcome"]
    assert outcomes == [(200, None)]


class GiveUps(logging.Handler):
    """Counts the batches of writes the worker's publisher gave up on."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "after retries" in record.getMessage():
            self.count += 1


async def test_an_outage_longer_than_the_workers_retries_never_leaves_a_gap_in_a_stream(
    make_postgres_url: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    start_load: StartLoad,
) -> None:
    """The worker gives up on writes Redis would not take for ~30 s; here it gives up after
    three tries (0.7 s), so a short outage stands for a long one. Streams it cut must end
    with an error, never go on with tokens missing."""
    monkeypatch.setattr("workers.publisher._RETRIES", 3)
    gave_up = GiveUps()
    logging.getLogger("enclave.worker").addHandler(gave_up)
    redis_server = RestartableRedis(tmp_path)
    redis_server.start()
    # Streams of 2 s, so the outage falls in the middle of most of them.
    engine = FakeEngine(reply=numbered_reply, step_delay_s=0.1, capacity=64, max_context=4096)
    try:
        # A stream whose last events were lost ends when no event came for 5 s.
        queue = QueueSettings(lease_timeout_s=1.0, request_timeout_s=5.0, worker_ttl_s=5.0)
        async with open_stack(make_postgres_url(), redis_server.url, engine, queue=queue) as stack:
            key = await stack.key()
            load = start_load(stack.client, key, CLIENTS)
            await poll(  # every stream a quarter through its answer
                lambda: load.chunks >= CLIENTS * 5, timeout_s=30, what="streams under way"
            )
            await asyncio.to_thread(redis_server.stop)
            await poll(  # a second batch: every stream's writes of 0.7 s
                lambda: gave_up.count >= 2,
                timeout_s=20,
                what="the worker to give up on two batches of writes",
            )
            await asyncio.to_thread(redis_server.start)
            back_at = time.monotonic()
            await poll(
                lambda: any(r.is_complete for r in load.since(back_at)),
                timeout_s=30,
                what="service again",
            )
            replies = await load.stop(timeout_s=60)
            await poll(lambda: no_pending_jobs(stack.redis), timeout_s=10, what="no pending job")
            rows = await stack.audit_rows()
    finally:
        logging.getLogger("enclave.worker").removeHandler(gave_up)
        redis_server.stop()
    print(Counter((r.status, r.is_complete, r.error and r.error["code"]) for r in replies))
    assert [r.failure for r in replies if r.failure] == []
    assert text_faults(replies) == []
    assert outcome_faults(rows) == []
