"""Privacy controls through the real app: digests only by default; a tenant that opts in
keeps prompts and answers sealed per data subject; erasure shreds the subject's keys (the
text becomes unreadable, the log still verifies); legal holds block erasure and retention."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from gateway.audit import merkle
from gateway.audit.checkpoints import Verifier, open_checkpoint
from gateway.audit.content import ContentVault
from gateway.audit.sealing import SealError, load_or_create_master_key, open_sealed
from gateway.audit.sequencer import sequence_batch
from gateway.db.models import AuditLogEntry, Tenant
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack, signed_audit

pytestmark = pytest.mark.integration

ORIGIN = "enclave.test/privacy"
PROMPT = "Patient 4711 reports chest pain since Tuesday"


def chat(content: str = PROMPT) -> dict:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}]}


@dataclass
class World:
    stack: Stack
    vault: ContentVault
    verifier: Verifier
    alice: str  # cardiology (keeps content)
    bob: str  # radiology (digests only)
    dora: str  # auditor + platform_admin
    carol: str  # cardiology auditor
    cardiology: str  # tenant id
    last_answer: str = ""

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def ask(self, key: str, content: str = PROMPT) -> str:
        response = await self.stack.client.post(
            "/v1/chat/completions", json=chat(content), headers=self.auth(key)
        )
        assert response.status_code == 200
        self.last_answer = response.json()["choices"][0]["message"]["content"]
        while await sequence_batch(self.stack.audit_db) > 0:
            pass
        return str(response.json()["id"])

    async def view(self, request_id: str, event: str) -> dict:
        listing = await self.stack.client.get(
            "/audit/records",
            params={"request_id": request_id, "event": event},
            headers=self.auth(self.dora),
        )
        (found,) = listing.json()["data"]
        response = await self.stack.client.get(
            f"/audit/records/{found['seq']}", headers=self.auth(self.dora)
        )
        assert response.status_code == 200
        return dict(response.json())


@pytest.fixture
async def world(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis, tmp_path: Path
) -> AsyncIterator[World]:
    audit, verifier = signed_audit(tmp_path, ORIGIN, checkpoint_interval_s=3600)
    async with open_stack(make_postgres_url(), redis_url, FakeEngine(), audit=audit) as stack:
        alice = await stack.key(tenant="cardiology", user="alice")
        bob = await stack.key(tenant="radiology", user="bob")
        carol = await stack.key(tenant="cardiology", user="carol", roles=frozenset({"auditor"}))
        dora = await stack.key(
            tenant="ops", user="dora", roles=frozenset({"auditor", "platform_admin"})
        )
        async with stack.sessions() as session:
            cardiology = await session.scalar(select(Tenant.id).where(Tenant.name == "cardiology"))
        assert cardiology is not None
        vault = ContentVault(
            stack.audit_db, stack.db, load_or_create_master_key(tmp_path / "content.key"), 365
        )
        world = World(stack, vault, verifier, alice, bob, dora, carol,
                      cardiology)  # fmt: skip
        opted = await stack.client.patch(
            f"/admin/v1/tenants/{cardiology}", json={"keep_content": True}, headers=world.auth(dora)
        )
        assert opted.status_code == 200, opted.text
        assert opted.json()["keep_content"] is True
        yield world


async def subject_of(world: World, request_id: str) -> str:
    rows = await world.stack.audit_rows()
    user_id = next(r.user_id for r in rows if r.request_id == request_id)
    assert user_id is not None
    return str(user_id)


async def log_bytes(world: World) -> bytes:
    async with world.stack.audit_db.connect() as conn:
        return b"".join(await conn.scalars(select(AuditLogEntry.data)))


async def test_by_default_only_digests_are_kept(world: World) -> None:
    request_id = await world.ask(world.bob, "radiology only keeps digests")
    accepted = await world.view(request_id, "accepted")
    assert "prompt_sealed" not in accepted["fields"]
    assert len(accepted["fields"]["prompt_sha256"]) == 64
    assert accepted["content"] is None
    assert b"radiology only keeps digests" not in await log_bytes(world)


async def test_an_opted_in_tenant_keeps_sealed_content_that_auditors_read(world: World) -> None:
    request_id = await world.ask(world.alice)
    accepted = await world.view(request_id, "accepted")
    outcome = await world.view(request_id, "outcome")
    assert accepted["fields"]["prompt_sealed"]["alg"] == "A256GCM"
    assert json.loads(accepted["content"]["prompt"]) == chat()["messages"]
    assert world.last_answer
    assert outcome["content"]["answer"] == world.last_answer
    assert PROMPT.encode() not in await log_bytes(world)  # only ciphertext in the log
    admin = [r for r in await world.stack.audit_rows() if r.event == "admin"]
    assert admin[-1].change == {
        "action": "update_tenant",
        "keep_content": {"old": False, "new": True},
    }


async def test_erasure_makes_content_unreadable_and_the_log_still_verifies(world: World) -> None:
    request_id = await world.ask(world.alice)
    before = await world.view(request_id, "accepted")
    alice_id = await subject_of(world, request_id)

    refused = await world.stack.client.delete(
        f"/audit/subjects/{alice_id}", headers=world.auth(world.dora)
    )
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "reason")
    erased = await world.stack.client.delete(
        f"/audit/subjects/{alice_id}",
        params={"reason": "GDPR Art. 17 request #12"},
        headers=world.auth(world.dora),
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["keys_shredded"] == 1

    after = await world.view(request_id, "accepted")
    assert after["content"] == {"prompt": None}
    assert after["record"] == before["record"]  # the record itself is untouched
    sealed = after["fields"]["prompt_sealed"]
    assert await world.vault.open(sealed, f"{request_id}:prompt") is None
    with pytest.raises(SealError):  # no other key opens it either
        open_sealed(bytes(32), sealed, f"{request_id}:prompt")

    proof = after["proof"]
    checkpoint = open_checkpoint(proof["checkpoint"], world.verifier, ORIGIN)
    path = [bytes.fromhex(h) for h in proof["inclusion"]]
    leaf = merkle.leaf_hash(after["record"].encode())
    assert merkle.verify_inclusion(leaf, after["seq"], checkpoint.size, path, checkpoint.root_hash)
    verified = await world.stack.client.post("/audit/verify", headers=world.auth(world.dora))
    assert verified.json()["ok"] is True

    looks = [r for r in await world.stack.audit_rows() if r.target == f"user:{alice_id}"]
    assert [r.change for r in looks] == [
        {"action": "erase_subject", "reason": "GDPR Art. 17 request #12"}
    ]


async def test_a_legal_hold_blocks_erasure_until_lifted(world: World) -> None:
    request_id = await world.ask(world.alice)
    alice_id = await subject_of(world, request_id)
    reason = {"reason": "litigation hold 2026-17"}
    held = await world.stack.client.put(
        f"/audit/subjects/{alice_id}/hold", params=reason, headers=world.auth(world.dora)
    )
    assert held.json()["held"] is True
    blocked = await world.stack.client.delete(
        f"/audit/subjects/{alice_id}", params=reason, headers=world.auth(world.dora)
    )
    assert (blocked.status_code, blocked.json()["error"]["code"]) == (409, "legal_hold")
    assert (await world.view(request_id, "accepted"))["content"]["prompt"] is not None

    lifted = await world.stack.client.delete(
        f"/audit/subjects/{alice_id}/hold", params=reason, headers=world.auth(world.dora)
    )
    assert lifted.json()["held"] is False
    erased = await world.stack.client.delete(
        f"/audit/subjects/{alice_id}", params=reason, headers=world.auth(world.dora)
    )
    assert erased.status_code == 200
    assert (await world.view(request_id, "accepted"))["content"]["prompt"] is None


async def test_a_tenant_hold_blocks_erasure_and_retention(world: World) -> None:
    request_id = await world.ask(world.alice)
    alice_id = await subject_of(world, request_id)
    hold = await world.stack.client.patch(
        f"/admin/v1/tenants/{world.cardiology}",
        json={"legal_hold": True},
        headers=world.auth(world.dora),
    )
    assert hold.json()["legal_hold"] is True
    blocked = await world.stack.client.delete(
        f"/audit/subjects/{alice_id}", params={"reason": "r"}, headers=world.auth(world.dora)
    )
    assert blocked.status_code == 409
    far_future = datetime.now(UTC) + timedelta(days=20 * 365)
    assert await world.vault.shred_expired(far_future) == 0

    await world.stack.client.patch(
        f"/admin/v1/tenants/{world.cardiology}",
        json={"legal_hold": False},
        headers=world.auth(world.dora),
    )
    assert await world.vault.shred_expired(datetime.now(UTC)) == 0  # not expired yet
    assert await world.vault.shred_expired(far_future) == 1
    assert (await world.view(request_id, "accepted"))["content"]["prompt"] is None


async def test_a_tenants_retention_period_decides_when_content_is_shredded(world: World) -> None:
    request_id = await world.ask(world.alice)
    await world.stack.client.patch(
        f"/admin/v1/tenants/{world.cardiology}",
        json={"content_retention_days": 30},
        headers=world.auth(world.dora),
    )
    month_end = datetime.now(UTC).replace(day=28) + timedelta(days=4)
    month_end = month_end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert await world.vault.shred_expired(month_end + timedelta(days=29)) == 0
    assert await world.vault.shred_expired(month_end + timedelta(days=30)) == 1
    assert (await world.view(request_id, "accepted"))["content"]["prompt"] is None


async def test_only_an_organisation_wide_auditor_erases(world: World) -> None:
    """A tenant's auditor, a user, and a platform_admin who is not an auditor (who reads the
    whole log) may neither erase nor hold: acting on evidence needs both roles."""
    request_id = await world.ask(world.alice)
    alice_id = await subject_of(world, request_id)
    erin = await world.stack.key(tenant="ops", user="erin", roles=frozenset({"platform_admin"}))
    for key in (world.carol, world.alice, erin):
        response = await world.stack.client.delete(
            f"/audit/subjects/{alice_id}", params={"reason": "r"}, headers=world.auth(key)
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"
    hold = await world.stack.client.put(
        f"/audit/subjects/{alice_id}/hold", params={"reason": "r"}, headers=world.auth(erin)
    )
    assert hold.status_code == 403
    assert "auditor and platform_admin" in hold.json()["error"]["message"]
    assert (await world.view(request_id, "accepted"))["content"]["prompt"] is not None
