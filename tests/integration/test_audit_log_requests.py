"""Requests through the real app land in the tamper-evident log too: sequenced by the
gateway's own sequencer, signed by its checkpointer, verified, users pseudonymised."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from gateway.audit.chain import pseudonym
from gateway.audit.checkpoints import Verifier
from gateway.audit.verify import verify_log
from gateway.db.models import AuditCheckpoint, AuditIndex, AuditLogEntry, AuditPending, User
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack, signed_audit

pytestmark = pytest.mark.integration

ORIGIN = "enclave.test/requests"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def signed_stack(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    redis_client: Redis,
    tmp_path: Path,
) -> AsyncIterator[tuple[Stack, Verifier]]:
    audit, verifier = signed_audit(tmp_path, ORIGIN, checkpoint_interval_s=0.2)
    async with open_stack(make_postgres_url(), redis_url, FakeEngine(), audit=audit) as stack:
        yield stack, verifier


async def wait_until_checkpointed(stack: Stack) -> int:
    """Poll (bounded) until a checkpoint covers every audit record written so far."""
    deadline = time.monotonic() + 20
    async with stack.sessions() as session:
        while True:
            pending = await session.scalar(select(func.count()).select_from(AuditPending))
            logged = await session.scalar(select(func.count()).select_from(AuditLogEntry))
            written = (pending or 0) + (logged or 0)
            covered = await session.scalar(select(func.max(AuditCheckpoint.size)))
            if covered is not None and covered >= written:
                return int(covered)
            assert time.monotonic() < deadline, f"checkpoint {covered} of {written} records"
            await asyncio.sleep(0.1)


async def test_requests_are_chained_checkpointed_and_verify(
    signed_stack: tuple[Stack, Verifier],
) -> None:
    stack, verifier = signed_stack
    key = await stack.key(tenant="cardiology", user="dr-house")
    ok = await stack.client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
    )
    refused = await stack.client.post("/v1/chat/completions", json=CHAT)
    assert (ok.status_code, refused.status_code) == (200, 401)

    size = await wait_until_checkpointed(stack)

    report = await verify_log(stack.db, verifier, ORIGIN)
    assert report.fault is None
    assert report.size == size == 3  # accepted, outcome, refused
    async with stack.sessions() as session:
        records = [
            json.loads(d)["fields"]
            for d in await session.scalars(select(AuditLogEntry.data).order_by(AuditLogEntry.seq))
        ]
        index = list(await session.scalars(select(AuditIndex).order_by(AuditIndex.seq)))
        user_id = await session.scalar(select(User.id).where(User.name == "dr-house"))
    assert [r["event"] for r in records] == ["accepted", "outcome", "refused"]
    assert [(r["event"], r["request_id"], r.get("user")) for r in records] == [
        (r.event, r.request_id, r.user) for r in index
    ]
    assert user_id is not None
    assert records[0]["user"] == pseudonym(stack.pseudonym_key, user_id)
    key_id = (await stack.audit_rows())[0].key_id
    assert key_id is not None
    assert records[0]["key"] == pseudonym(stack.pseudonym_key, key_id)
    assert all(user_id not in json.dumps(r) for r in records)  # pseudonymised
    assert all(key_id not in json.dumps(r) for r in records)


async def test_the_checkpoint_key_is_published(signed_stack: tuple[Stack, Verifier]) -> None:
    stack, verifier = signed_stack
    response = await stack.client.get("/v1/audit/checkpoint-key")
    assert response.json() == {"origin": ORIGIN, "verifier_key": verifier.key_string}
