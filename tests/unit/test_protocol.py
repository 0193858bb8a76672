"""The queue protocol: round trips, and it drags in none of the heavy stacks."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from gateway.queue import protocol
from gateway.queue.protocol import (
    ChatMessage,
    Delta,
    Failed,
    Finished,
    Job,
    SamplingOptions,
    Started,
)


def test_importing_the_protocol_loads_neither_litestar_sqlalchemy_nor_vllm() -> None:
    code = (
        "import sys, gateway.queue.protocol\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'litestar', 'sqlalchemy', 'vllm', 'torch', 'pydantic'})\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_job_round_trips_through_msgpack() -> None:
    job = Job(
        id="chatcmpl-1",
        model="m",
        kind="chat",
        reply_to="enclave:inbox:g",
        tenant="t",
        sampling=SamplingOptions(max_tokens=5, stop=("\n",), temperature=0.0),
        enqueued_at=1.5,
        messages=(ChatMessage("user", "hi"),),
    )
    assert protocol.decode_job(protocol.encode(job)) == job


@pytest.mark.parametrize(
    "event",
    [
        Started("j", "w", 12, "sha256:ab"),
        Delta("j", "Par", 1),
        Finished("j", "stop", 12, 3),
        Failed(
            "j", 400, "invalid_request_error", "context_length_exceeded", "too long", "messages"
        ),
    ],
)
def test_events_round_trip_as_their_own_type(event: protocol.Event) -> None:
    decoded = protocol.decode_event(protocol.encode(event))
    assert decoded == event
    assert type(decoded) is type(event)


@pytest.mark.parametrize("count", [1, 15, 16, 65_535, 65_536])
def test_a_batch_of_events_round_trips_in_order_across_every_array_header(count: int) -> None:
    events: list[protocol.Event] = [Delta(f"j{i % 3}", str(i), i, seq=i + 1) for i in range(count)]
    events[-1] = Finished("j0", "stop", 12, count)
    decoded = protocol.decode_batch(protocol.encode_batch([protocol.encode(e) for e in events]))
    assert decoded == events


def test_decoding_rejects_a_pickle_or_garbage() -> None:
    with pytest.raises(msgspec.DecodeError):
        protocol.decode_job(b"\x80\x04\x95garbage")


def test_every_key_lives_under_one_prefix() -> None:
    keys = [
        protocol.jobs_stream_key("m", "batch", "t"),
        protocol.queues_key("m"),
        protocol.backlog_key("m", "interactive"),
        protocol.service_key("m"),
        protocol.service_floor_key("m"),
        protocol.work_channel("m"),
        protocol.inbox_key("g"),
        protocol.streamed_flag_key("j"),
        protocol.cancel_key("j"),
        protocol.workers_index_key(),
        protocol.worker_info_key("w"),
        protocol.CANCEL_CHANNEL,
    ]
    assert all(k.startswith(protocol.KEY_PREFIX + ":") for k in keys)
    assert len(set(keys)) == len(keys)
