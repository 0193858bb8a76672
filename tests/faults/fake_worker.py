"""A worker process for fault tests that kill workers: the real Consumer (claims, leases,
reclaims, events) on a FakeEngine answering ``numbered_reply``, in its own OS process so a
test can ``kill -9`` it. It lives under tests/: no Enclave setting or command selects it.

Like vLLM, the engine takes more requests than it runs at once: ``--capacity`` is what the
worker pulls, ``--batch`` how many of them produce tokens together; the others wait inside
the engine before their first token (vLLM's waiting queue), so a worker holds claimed jobs
that have not started, as a real one does under load.

    python -m tests.faults.fake_worker WORKER_ID --capacity 24 --batch 8 --step-delay-s 0.05
    (ENCLAVE_REDIS__URL and ENCLAVE_QUEUE__* as for a worker)
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncGenerator

from gateway.queue.protocol import SamplingOptions
from tests.fakes.engine import FakeEngine
from tests.fakes.worker_process import consume_until_signalled
from tests.faults.load import numbered_reply
from workers.engine import EngineOutput, Prompt


class BatchedFakeEngine(FakeEngine):
    """At most ``batch`` requests produce tokens at a time; the rest wait for a place."""

    def __init__(self, batch: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._batch = asyncio.Semaphore(batch)

    async def generate(
        self, request_id: str, prompt: Prompt, sampling: SamplingOptions
    ) -> AsyncGenerator[EngineOutput, None]:
        async with self._batch:
            async for output in super().generate(request_id, prompt, sampling):
                yield output


async def main(args: argparse.Namespace) -> None:
    engine = BatchedFakeEngine(
        args.batch,
        reply=numbered_reply,
        step_delay_s=args.step_delay_s,
        capacity=args.capacity,
        max_context=4096,
    )
    await consume_until_signalled(engine, args.worker_id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("worker_id")
    parser.add_argument("--capacity", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--step-delay-s", type=float, default=0.05)
    asyncio.run(main(parser.parse_args()))
