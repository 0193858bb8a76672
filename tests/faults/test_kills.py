"""``kill -9`` under 50 concurrent streaming clients: a worker holding streaming and waiting
jobs, a gateway replica holding streams, and the audit sequencer in the middle of a batch.

Every process killed here is a real OS process (``deployment.py``): gateway replicas are
``enclave serve``; workers run the real Consumer (claims, leases, reclaims, streamed flags,
events) over a fake engine (``fake_worker.py``), not vLLM. Fifty streaming clients on the
demo model on vLLM CPU take minutes per run on two cores, and the fake engine's numbered
answer shows any duplicated, lost or foreign token, which a sampled model's text cannot.
What vLLM adds on a kill (its engine-core child dies with the worker's process group, a
reclaimed job re-runs on another vLLM) is covered by the single-request SIGKILL tests on the
real model in ``tests/e2e/test_faults.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from redis.asyncio import Redis

from gateway.custody import GATEWAY_LOST
from gateway.queue.protocol import gateway_alive_key, gateways_key
from tests.audit_records import Logged
from tests.conftest import libpq_url
from tests.faults.conftest import StartLoad
from tests.faults.deployment import (
    GATEWAY_TTL_S,
    LEASE_TIMEOUT_S,
    Deployment,
    held_jobs,
    open_deployment,
)
from tests.faults.load import (
    Load,
    Reply,
    envelope_faults,
    no_pending_jobs,
    outcome_faults,
    poll,
    text_faults,
)

pytestmark = pytest.mark.integration

CLIENTS = 50


@pytest.fixture
async def deployment(
    postgres_url: str, redis_url: str, redis_client: Redis, tmp_path: Path
) -> AsyncIterator[Deployment]:
    async with open_deployment(postgres_url, redis_url, tmp_path) as opened:
        yield opened


def by_request(replies: list[Reply]) -> dict[str | None, Reply]:
    return {r.request_id: r for r in replies}


# --- a worker ---------------------------------------------------------------------------


async def test_worker_killed_under_load_waiting_jobs_complete_elsewhere_streams_fail_cleanly(
    deployment: Deployment, redis_client: Redis, start_load: StartLoad
) -> None:
    """Worker A holds 24 jobs (8 streaming, 16 waiting in its engine) when it is killed.
    Its waiting jobs are reclaimed after the lease and completed by worker B; its streams
    end with ``worker_lost``; no other request fails; no token is repeated."""
    _, base_url = deployment.gateway()
    doomed = deployment.worker("worker-a", capacity=24, batch=8, step_delay_s=0.05)
    deployment.worker("worker-b", capacity=24, batch=8, step_delay_s=0.05)
    key = await deployment.key()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        load = start_load(client, key, CLIENTS)

        async def holds_streaming_and_waiting_jobs() -> bool:
            held = await held_jobs(redis_client, "worker-a")
            streaming = sum(held.values())
            return streaming >= 3 and len(held) - streaming >= 3

        await poll(
            holds_streaming_and_waiting_jobs,
            timeout_s=30,
            what="worker-a holding streaming and waiting jobs",
        )
        await asyncio.to_thread(doomed.kill)
        held = await held_jobs(redis_client, "worker-a")  # a dead worker's claims stay put
        mid_stream = {job for job, has_streamed in held.items() if has_streamed}
        mid_queue = set(held) - mid_stream
        answered_s = await poll(
            lambda: set(held) <= set(by_request(load.replies)),
            timeout_s=30,
            what="every job of the killed worker answered",
        )
        stranded = await held_jobs(redis_client, "worker-a")
        replies = await load.stop()
    cleared_s = await poll(
        lambda: no_pending_jobs(redis_client),
        timeout_s=LEASE_TIMEOUT_S + 2,
        what="no job left pending",
    )
    rows = await deployment.audit_rows()
    replied = by_request(replies)
    print(
        f"{len(replies)} requests; killed worker held {len(mid_stream)} streaming and "
        f"{len(mid_queue)} waiting jobs, all answered {answered_s:.1f} s after the kill; "
        f"pending cleared {cleared_s:.1f} s after the load stopped; "
        f"{Counter((r.is_complete, r.error and r.error['code']) for r in replies)}"
    )

    assert mid_stream, held
    assert stranded == {}  # every job the dead worker held was taken over
    assert mid_queue, held
    assert [r.failure for r in replies if r.failure] == []
    assert {r.status for r in replies} == {200}
    assert envelope_faults(replies) == []
    assert text_faults(replies) == []  # no duplicated, lost or foreign token
    lost = [replied[job] for job in mid_stream if not replied[job].is_complete]
    assert lost, "no stream of the killed worker was cut"  # some finished before the kill
    assert {r.error and r.error["code"] for r in lost} == {"worker_lost"}
    assert {r.request_id for r in replies if not r.is_complete} == {r.request_id for r in lost}
    assert [replied[job] for job in mid_queue if not replied[job].is_complete] == []
    outcomes = {r.request_id: r for r in rows if r.event == "outcome"}
    assert {outcomes[job].worker_id for job in mid_queue} == {"worker-b"}
    assert {(outcomes[r.request_id].status, outcomes[r.request_id].error_code) for r in lost} == {
        (502, "worker_lost")
    }
    assert outcome_faults(rows) == []
    accepted = {r.request_id for r in rows if r.event == "accepted"}
    assert set(replied) == accepted  # every accepted request reached its client


# --- a gateway replica ------------------------------------------------------------------


@dataclass
class GatewayKill:
    """What the clients of both replicas saw, and the audit log, after one was killed."""

    doomed: list[Reply]
    other: list[Reply]
    other_since_kill: list[Reply]
    rows: list[Logged]
    cleared_s: float
    recorded_s: float | None
    """Seconds after the load until every accepted request had an outcome record."""


@pytest.fixture(scope="module")
async def gateway_kill(
    postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> GatewayKill:
    """Two replicas, 25 streaming clients on each; one replica is killed mid-stream."""
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    try:
        state_dir = tmp_path_factory.mktemp("kill")
        async with open_deployment(postgres_url, redis_url, state_dir) as dep:
            doomed, doomed_url = dep.gateway()
            _, other_url = dep.gateway()
            dep.worker("worker-1", capacity=64, batch=64, step_delay_s=0.1)
            key = await dep.key()
            half = CLIENTS // 2
            async with (
                httpx.AsyncClient(base_url=doomed_url, timeout=30) as doomed_client,
                httpx.AsyncClient(base_url=other_url, timeout=30) as other_client,
            ):
                doomed_load = Load(doomed_client, key, half, is_stopped_by_failure=True)
                other_load = Load(other_client, key, half)
                doomed_load.start()
                other_load.start()
                try:
                    await poll(  # every stream a quarter through its answer
                        lambda: doomed_load.chunks >= half * 5 and other_load.chunks >= half * 5,
                        timeout_s=30,
                        what="streams under way on both replicas",
                    )
                    await asyncio.to_thread(doomed.kill)
                    killed_at = time.monotonic()
                    doomed_replies = await doomed_load.stop()  # each client ends on its failure
                    await poll(
                        lambda: sum(r.is_complete for r in other_load.since(killed_at)) >= half,
                        timeout_s=30,
                        what="the other replica serving on",
                    )
                    other_replies = await other_load.stop()
                finally:
                    await doomed_load.cancel()
                    await other_load.cancel()
            # The killed replica's jobs run to their end (2 s) on the worker, unheard.
            cleared_s = await poll(
                lambda: no_pending_jobs(redis), timeout_s=LEASE_TIMEOUT_S + 4, what="no pending job"
            )
            recorded_s = await every_outcome_recorded_s(dep)
            rows = await dep.audit_rows()
            scenario = GatewayKill(
                doomed_replies,
                other_replies,
                other_load.since(killed_at),
                rows,
                cleared_s,
                recorded_s,
            )
        # Stopped before the tests read it: a replica left running would sweep later
        # tests' gateways into this deployment's database, and its worker take their jobs.
        await redis.flushdb()
    finally:
        await redis.aclose()
    return scenario


async def test_gateway_killed_under_load_drops_its_clients_only(gateway_kill: GatewayKill) -> None:
    doomed, other = gateway_kill.doomed, gateway_kill.other
    cut = [r for r in doomed if r.failure]
    mid_stream = sum(r.status == 200 for r in cut)
    print(
        f"killed replica: {len(doomed)} requests, {len(cut)} cut ({mid_stream} "
        f"mid-stream); other replica: {len(other)} requests, {len(gateway_kill.other_since_kill)} "
        f"after the kill; pending cleared {gateway_kill.cleared_s:.1f} s after the load"
    )
    assert len(cut) == CLIENTS // 2  # every client of the killed replica lost its connection
    assert sum(r.status == 200 for r in cut) >= CLIENTS // 4  # most of them mid-stream
    assert [r for r in cut if r.is_done or r.error] == []  # a drop, not a made-up ending
    assert [r for r in doomed if not r.failure and not r.is_complete] == []
    assert text_faults(doomed) == []  # what came before the drop was a clean prefix
    assert [r.failure for r in other if r.failure] == []
    assert [r for r in other if not r.is_complete] == []
    assert text_faults(other) == []
    rows = gateway_kill.rows
    records = Counter((r.request_id, r.event) for r in rows)
    for reply in other:
        assert (records[reply.request_id, "accepted"], records[reply.request_id, "outcome"]) == (
            1,
            1,
        ), reply.request_id


async def test_gateway_killed_under_load_every_accepted_request_still_gets_one_outcome(
    gateway_kill: GatewayKill,
) -> None:
    """The surviving replica sweeps the dead one's registry of accepted requests: each
    request it held gets one ``gateway_lost`` outcome; no other request does."""
    rows = gateway_kill.rows
    faults = outcome_faults(rows)
    lost = {r.request_id for r in rows if r.event == "outcome" and r.error_code == GATEWAY_LOST}
    doomed_ids = {r.request_id for r in gateway_kill.doomed if r.request_id}
    cut_ids = {r.request_id for r in gateway_kill.doomed if r.failure and r.request_id}
    print(
        f"{len(faults)} accepted requests without exactly one outcome record; {len(lost)} "
        f"recorded as {GATEWAY_LOST} ({len(cut_ids)} cut mid-stream); every outcome "
        f"recorded {gateway_kill.recorded_s} s after the load"
    )
    assert faults == []
    assert lost  # the killed replica held requests
    assert lost.isdisjoint(r.request_id for r in gateway_kill.other)  # only the dead one's
    assert lost & doomed_ids
    lost_records = [r for r in rows if r.event == "outcome" and r.request_id in lost]
    assert {(r.status, r.error_code) for r in lost_records} == {(502, GATEWAY_LOST)}
    outcomes = {r.request_id: r for r in rows if r.event == "outcome"}
    for request_id in cut_ids:  # each was cut before its end, or just after its record
        assert (outcomes[request_id].status, outcomes[request_id].error_code) in {
            (502, GATEWAY_LOST),
            (200, None),
        }
    assert sum(outcomes[i].error_code == GATEWAY_LOST for i in cut_ids) >= CLIENTS // 4


async def every_outcome_recorded_s(dep: Deployment) -> float | None:
    """Seconds until every accepted request has an outcome record (the dead replica's are
    written by a survivor once its liveness key expires); None if that never happens."""

    async def is_recorded() -> bool:
        rows = await dep.audit_rows()
        accepted = {r.request_id for r in rows if r.event == "accepted"}
        return accepted <= {r.request_id for r in rows if r.event == "outcome"}

    try:
        return await poll(is_recorded, timeout_s=GATEWAY_TTL_S * 3 + 15, what="every outcome")
    except TimeoutError:
        return None  # the tests say which are missing


# --- a gateway replica paused, then resumed ---------------------------------------------


async def test_gateway_paused_past_its_ttl_resumes_without_writing_a_second_outcome(
    deployment: Deployment, redis_client: Redis
) -> None:
    """A replica stopped with SIGSTOP for longer than its TTL is taken for dead: the other
    replica records its requests in flight as ``gateway_lost``. Resumed (SIGCONT), it
    finishes them but writes no outcome of its own; its clients see the ``gateway_lost``
    error the log records, not a success; every accepted request has one outcome."""
    paused, paused_url = deployment.gateway()
    _, other_url = deployment.gateway()
    deployment.worker("worker-1", capacity=64, batch=64, step_delay_s=0.1)
    key = await deployment.key()
    half = CLIENTS // 2
    async with (
        httpx.AsyncClient(base_url=paused_url, timeout=30) as paused_client,
        httpx.AsyncClient(base_url=other_url, timeout=30) as other_client,
    ):
        paused_load, other_load = Load(paused_client, key, half), Load(other_client, key, half)
        paused_load.start()
        other_load.start()
        try:
            await poll(
                lambda: paused_load.chunks >= half * 5 and other_load.chunks >= half * 5,
                timeout_s=30,
                what="streams under way on both replicas",
            )
            await asyncio.to_thread(paused.pause)
            try:
                lost_id = await dead_gateway(redis_client)
                swept_s = await poll(
                    lambda: _is_forgotten(redis_client, lost_id),
                    timeout_s=GATEWAY_TTL_S * 3 + 15,
                    what="the paused replica's requests swept",
                )
            finally:
                await asyncio.to_thread(paused.resume)
            paused_replies = await paused_load.stop()
            other_replies = await other_load.stop()
        finally:
            await paused_load.cancel()
            await other_load.cancel()
    await poll(lambda: no_pending_jobs(redis_client), timeout_s=30, what="no pending job")
    recorded_s = await every_outcome_recorded_s(deployment)
    rows = await deployment.audit_rows()
    outcomes = {r.request_id: r for r in rows if r.event == "outcome"}
    lost = {i for i, r in outcomes.items() if r.error_code == GATEWAY_LOST}
    print(
        f"{len(paused_replies)} requests on the paused replica, {len(lost)} recorded as "
        f"{GATEWAY_LOST} {swept_s:.1f} s after its liveness key expired; every outcome "
        f"recorded {recorded_s} s after the load; "
        f"{Counter((r.is_complete, r.error and r.error['code']) for r in paused_replies)}"
    )

    assert outcome_faults(rows) == []  # nothing twice, nothing missing
    assert lost
    assert lost <= {r.request_id for r in paused_replies}
    for reply in paused_replies:  # the client saw what the log says
        record = outcomes[reply.request_id]
        if record.error_code == GATEWAY_LOST:
            assert not reply.is_complete, reply
            assert reply.error is not None, reply
            assert reply.error["code"] == GATEWAY_LOST
        else:
            assert (reply.is_complete, record.status) == (True, 200), reply
    assert [r.failure for r in paused_replies + other_replies if r.failure] == []
    assert [r for r in other_replies if not r.is_complete] == []
    assert text_faults(paused_replies + other_replies) == []
    assert "taken for dead" in paused.log_path.read_text()


async def dead_gateway(redis: Redis) -> str:
    """The id of the registered gateway whose liveness key is gone, once there is one."""
    found: list[str] = []

    async def is_found() -> bool:
        for member in await redis.smembers(gateways_key()):
            if not await redis.exists(gateway_alive_key(member.decode())):
                found.append(member.decode())
                return True
        return False

    await poll(is_found, timeout_s=GATEWAY_TTL_S * 3, what="a gateway taken for dead")
    return found[0]


async def _is_forgotten(redis: Redis, gateway_id: str) -> bool:
    return not await redis.sismember(gateways_key(), gateway_id)


# --- the audit sequencer ----------------------------------------------------------------

MID_BATCH = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND query ILIKE '%audit_index%'"
)
SEQUENCER = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def scalar(conn: psycopg.AsyncConnection[tuple[object, ...]], sql: str) -> object:
    row = await (await conn.execute(sql)).fetchone()
    return None if row is None else row[0]


async def test_sequencer_killed_mid_batch_another_replica_takes_over_and_the_chain_verifies(
    deployment: Deployment, redis_client: Redis, start_load: StartLoad
) -> None:
    """The leader's sequencer is stopped inside a batch (its log rows inserted, not
    committed: a lock this test holds on the search index keeps it there), then its replica
    is killed. The other replica's sequencer takes the advisory lock and sequences every
    record exactly once; ``enclave audit verify`` accepts the chain and the checkpoints.
    The clients use the other replica, whose requests must all be in the log."""
    url = libpq_url(deployment.database_url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as watcher:
        leader, _ = deployment.gateway()
        await poll(lambda: scalar(watcher, SEQUENCER), timeout_s=30, what="a sequencer")
        leader_backend = await scalar(watcher, SEQUENCER)
        _, base_url = deployment.gateway()
        deployment.worker("worker-1", capacity=64, batch=64, step_delay_s=0.02)
        key = await deployment.key()
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            load = start_load(client, key, CLIENTS)
            await poll(
                lambda: sum(r.is_complete for r in load.replies) >= CLIENTS,
                timeout_s=30,
                what="records flowing",
            )
            async with await psycopg.AsyncConnection.connect(url) as blocker:
                await blocker.execute("LOCK TABLE audit_index IN SHARE MODE")
                await poll(lambda: scalar(watcher, MID_BATCH), timeout_s=10, what="a batch")
                batch_backend = await scalar(watcher, MID_BATCH)
                await asyncio.to_thread(leader.kill)
                await blocker.rollback()
            killed_at = time.monotonic()
            takeover_s = await poll(
                lambda: _is_new_leader(watcher, leader_backend),
                timeout_s=15,
                what="another replica's sequencer",
            )
            await poll(
                lambda: sum(r.is_complete for r in load.since(killed_at)) >= CLIENTS,
                timeout_s=30,
                what="requests after the kill",
            )
            replies = await load.stop()
        drained_s = await poll(
            lambda: _is_zero(watcher, "SELECT count(*) FROM audit_pending"),
            timeout_s=15,
            what="every record sequenced",
        )
        batch_ended = not await scalar(
            watcher, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {batch_backend}"
        )
    rows = await deployment.audit_rows()
    verified = deployment.cli("audit", "verify")
    print(
        f"{len(replies)} requests, {len(rows)} records; new sequencer {takeover_s:.1f} s after "
        f"the kill, backlog drained {drained_s:.1f} s after the load; verify: "
        f"{verified.stdout.strip()}"
    )

    assert batch_ended  # the killed batch's transaction is gone, not committed later
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"ok: {len(rows)} records")
    assert all(r.seq is not None for r in rows)
    assert [r.seq for r in rows] == list(range(len(rows)))
    twice = [k for k, n in Counter((r.request_id, r.event) for r in rows).items() if n > 1]
    assert twice == []  # nothing sequenced twice
    assert [r.failure for r in replies if r.failure] == []
    assert [r for r in replies if not r.is_complete] == []
    assert text_faults(replies) == []
    assert outcome_faults(rows) == []
    accepted = {r.request_id for r in rows if r.event == "accepted"}
    assert set(by_request(replies)) == accepted  # every request's records, none lost


async def _is_new_leader(conn: psycopg.AsyncConnection[tuple[object, ...]], old: object) -> bool:
    holder = await scalar(conn, SEQUENCER)
    return holder is not None and holder != old


async def _is_zero(conn: psycopg.AsyncConnection[tuple[object, ...]], sql: str) -> bool:
    return await scalar(conn, sql) == 0
