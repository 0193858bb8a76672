"""A BENCHMARK-ONLY worker: the real Consumer on an engine that answers a fixed short text at
once, so a benchmark sees what the gateway, the queue and the audit log cost with no model in
the way. It lives under tests/: no Enclave setting or command can select it.

    python -m tests.bench.instant_worker MODEL      (ENCLAVE_REDIS__URL as for a worker)
"""

from __future__ import annotations

import asyncio
import os
import sys

from tests.fakes.engine import FakeEngine
from tests.fakes.worker_process import consume_until_signalled

INSTANT_REPLY = "ok"
CAPACITY = 256


async def main(model: str) -> None:
    engine = FakeEngine(reply=INSTANT_REPLY, capacity=CAPACITY, model=model, max_context=4096)
    await consume_until_signalled(engine, f"instant-{os.getpid()}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
