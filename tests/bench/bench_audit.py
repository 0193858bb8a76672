"""Audit write path: 32 concurrent writers append pending records (group commit,
``PendingWriter``) in one process while the sequencer chains them in another (the leader
replica), on PostgreSQL. Prints records/s sequenced and writer latency; not a test.

    ENCLAVE_BENCH_POSTGRES=postgresql+asyncpg://postgres@127.0.0.1:5432/test \
        .venv/bin/python -m tests.bench.bench_audit

A fresh database ``bench_audit_<uuid>`` is created next to the given one and dropped after.
Target (issue 4): ≥ 10,000 records/s sustained with 32 writers, median writer latency < 5 ms.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gateway.audit.sequencer import run_sequencer, sequence_batch
from gateway.audit.writer import PendingWriter
from gateway.db.migrate import upgrade_to_head
from gateway.db.models import AuditLogEntry, AuditPending
from gateway.db.session import create_engine
from tests.conftest import create_database, drop_database

WRITERS = 32
DURATION_S = 10.0
RESULTS_PATH = Path("bench-results/bench_audit.json")


async def writer(
    pending: PendingWriter, index: int, deadline: float, latencies: list[float]
) -> int:
    count = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        fields = {"event": "accepted", "request_id": f"bench-{index}-{count}", "status": 202}
        await pending.append(fields)
        latencies.append(time.perf_counter() - started)
        count += 1
    return count


def sequencer_process(url: str, stop: Any) -> None:
    """The leader replica's sequencer, in its own process (as with several gateways)."""

    async def run() -> None:
        engine = create_engine(url)
        halt = asyncio.Event()
        task = asyncio.create_task(run_sequencer(engine, halt))
        await asyncio.to_thread(stop.wait)
        halt.set()
        await task
        await engine.dispose()

    asyncio.run(run())


async def bench(url: str) -> dict[str, float]:
    engine = create_engine(url)
    latencies: list[float] = []
    pending = PendingWriter(engine)
    await pending.start()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    sequencer = context.Process(target=sequencer_process, args=(url, stop))
    sequencer.start()
    started = time.monotonic()
    counts = await asyncio.gather(
        *(writer(pending, i, started + DURATION_S, latencies) for i in range(WRITERS))
    )
    await pending.stop()
    written_s = time.monotonic() - started
    async with engine.connect() as conn:
        sequenced_in_window = await conn.scalar(select(func.count()).select_from(AuditLogEntry))
    stop.set()
    await asyncio.to_thread(sequencer.join, 60)
    while await sequence_batch(engine) > 0:
        pass
    async with engine.connect() as conn:
        pending = await conn.scalar(select(func.count()).select_from(AuditPending))
    await engine.dispose()
    latencies.sort()
    return {
        "writers": WRITERS,
        "written": sum(counts),
        "written_per_s": sum(counts) / written_s,
        "sequenced_within_window": int(sequenced_in_window or 0),
        "sequenced_per_s": (sequenced_in_window or 0) / written_s,
        "writer_p50_ms": statistics.median(latencies) * 1000,
        "writer_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "left_pending": int(pending or 0),
    }


def main() -> None:
    base = os.environ.get(
        "ENCLAVE_BENCH_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    url = create_database(base, "bench_audit")
    try:
        upgrade_to_head(url)
        result = asyncio.run(bench(url))
    finally:
        drop_database(base, url)
    for key, value in result.items():
        print(f"{key:>26}: {value:,.1f}")
    RESULTS_PATH.parent.mkdir(exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
