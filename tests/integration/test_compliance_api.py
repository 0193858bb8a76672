"""The compliance API through the real app: auditors search, view records with proofs,
export JSONL that verifies offline and CSV, verify the log; tenant boundaries from both
sides; every look at the log is itself recorded."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from gateway.audit import merkle
from gateway.audit.checkpoints import Checkpoint, Verifier, open_checkpoint
from gateway.audit.export import verify_export
from gateway.audit.sequencer import sequence_batch
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack, signed_audit

pytestmark = pytest.mark.integration

ORIGIN = "enclave.test/compliance"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class World:
    stack: Stack
    verifier: Verifier
    alice: str  # cardiology user
    bob: str  # radiology user
    carol: str  # cardiology auditor
    dora: str  # auditor + platform_admin
    requests: dict[str, str]  # user -> request id of their chat

    async def get(self, key: str, path: str, **params: str | int) -> dict:
        response = await self.stack.client.get(
            path, params=params, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def sequenced(self) -> None:
        """Whatever the in-process sequencer has not taken yet, sequenced now."""
        while await sequence_batch(self.stack.audit_db) > 0:
            pass


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
        requests = {}
        for name, key in (("alice", alice), ("bob", bob)):
            response = await stack.client.post(
                "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200
            requests[name] = response.json()["id"]
        world = World(stack, verifier, alice, bob, carol, dora, requests)
        await world.sequenced()
        yield world


def request_ids(listing: dict) -> set[str]:
    return {r["fields"]["request_id"] for r in listing["data"]}


async def test_a_tenant_auditor_sees_only_its_tenant(world: World) -> None:
    listing = await world.get(world.carol, "/audit/records", event="accepted")
    assert request_ids(listing) == {world.requests["alice"]}
    assert {r["fields"]["tenant_id"] for r in listing["data"]} == {
        (await world.stack.audit_rows())[0].tenant_id
    }

    other = await world.stack.client.get(
        "/audit/records",
        params={"tenant": "someone-else"},
        headers={"Authorization": f"Bearer {world.carol}"},
    )
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "permission_denied"


async def test_a_platform_auditor_sees_every_tenant(world: World) -> None:
    listing = await world.get(world.dora, "/audit/records", event="accepted")
    assert request_ids(listing) == set(world.requests.values())


async def test_filters_by_request_user_and_outcome(world: World) -> None:
    one = await world.get(world.dora, "/audit/records", request_id=world.requests["bob"])
    assert [r["fields"]["event"] for r in one["data"]] == ["accepted", "outcome"]

    rows = await world.stack.audit_rows()
    bob_id = next(r.user_id for r in rows if r.request_id == world.requests["bob"])
    by_user = await world.get(world.dora, "/audit/records", user=bob_id)
    assert request_ids(by_user) == {world.requests["bob"]}

    refused = await world.stack.client.post("/v1/chat/completions", json=CHAT)  # no key: 401
    assert refused.status_code == 401
    await world.sequenced()
    errors = await world.get(world.dora, "/audit/records", outcome="error", event="refused")
    assert [r["fields"]["status"] for r in errors["data"]] == [401]


async def test_cursor_pages_cover_the_search_once(world: World) -> None:
    everything = await world.get(world.dora, "/audit/records", limit=1000)
    seen, cursor = [], None
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await world.get(world.dora, "/audit/records", **params)
        seen += [r["seq"] for r in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    # records written by the searches themselves come later than the first listing
    assert seen[: len(everything["data"])] == [r["seq"] for r in everything["data"]]
    assert len(seen) == len(set(seen))


async def test_bad_search_input_is_a_clear_400(world: World) -> None:
    for params in ({"since": "yesterday"}, {"limit": 0}, {"event": "x"}, {"cursor": "!!"}):
        response = await world.stack.client.get(
            "/audit/records", params=params, headers={"Authorization": f"Bearer {world.dora}"}
        )
        assert response.status_code == 400, params
        assert response.json()["error"]["param"] == next(iter(params))


async def test_a_record_comes_with_a_proof_under_a_signed_checkpoint(world: World) -> None:
    (accepted,) = (
        await world.get(
            world.carol, "/audit/records", request_id=world.requests["alice"], event="accepted"
        )
    )["data"]
    view = await world.get(world.carol, f"/audit/records/{accepted['seq']}")
    proof = view["proof"]
    checkpoint = open_checkpoint(proof["checkpoint"], world.verifier, ORIGIN)
    assert checkpoint.size == proof["tree_size"] > accepted["seq"]
    leaf = merkle.leaf_hash(view["record"].encode())
    assert leaf.hex() == view["leaf"]
    path = [bytes.fromhex(h) for h in proof["inclusion"]]
    assert merkle.verify_inclusion(leaf, view["seq"], checkpoint.size, path, checkpoint.root_hash)
    assert not merkle.verify_inclusion(
        merkle.leaf_hash(view["record"].encode() + b" "),
        view["seq"],
        checkpoint.size,
        path,
        checkpoint.root_hash,
    )


async def test_another_tenants_record_is_not_found(world: World) -> None:
    (bobs,) = (
        await world.get(
            world.dora, "/audit/records", request_id=world.requests["bob"], event="accepted"
        )
    )["data"]
    response = await world.stack.client.get(
        f"/audit/records/{bobs['seq']}", headers={"Authorization": f"Bearer {world.carol}"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "record_not_found"


async def test_a_platform_admin_reads_every_tenant_and_the_reading_is_recorded(
    world: World,
) -> None:
    """platform_admin without auditor: the whole log, as the console's platform_admin sees it."""
    erin = await world.stack.key(tenant="ops", user="erin", roles=frozenset({"platform_admin"}))
    listing = await world.get(erin, "/audit/records", event="accepted")
    assert request_ids(listing) == set(world.requests.values())
    looks = [r for r in await world.stack.audit_rows() if r.event == "audit"]
    assert [(r.target, r.change["filters"]) for r in looks] == [
        ("audit:search", {"event": "accepted"})
    ]


async def test_non_auditors_are_refused_and_the_refusal_is_recorded(world: World) -> None:
    response = await world.stack.client.get(
        "/audit/records", headers={"Authorization": f"Bearer {world.alice}"}
    )
    assert response.status_code == 403
    rows = await world.stack.audit_rows()
    assert (rows[-1].event, rows[-1].endpoint, rows[-1].status) == (
        "refused",
        "/audit/records",
        403,
    )


async def test_every_look_at_the_log_is_recorded(world: World) -> None:
    await world.get(world.carol, "/audit/records", event="accepted")
    seq = (await world.get(world.carol, "/audit/records"))["data"][0]["seq"]
    await world.get(world.carol, f"/audit/records/{seq}")
    export = await world.stack.client.get(
        "/audit/export",
        params={"format": "csv"},
        headers={"Authorization": f"Bearer {world.carol}"},
    )
    assert export.status_code == 200
    looks = [r for r in await world.stack.audit_rows() if r.event == "audit"]
    carol_id = looks[0].user_id
    assert carol_id is not None
    assert [(r.target, r.user_id) for r in looks] == [
        ("audit:search", carol_id),
        ("audit:search", carol_id),
        (f"audit:record:{seq}", carol_id),
        ("audit:export", carol_id),
    ]
    assert looks[0].change["filters"]["event"] == "accepted"
    assert looks[3].change["format"] == "csv"


async def test_a_jsonl_export_verifies_offline_and_not_after_one_byte_changes(
    world: World, tmp_path: Path
) -> None:
    response = await world.stack.client.get(
        "/audit/export", headers={"Authorization": f"Bearer {world.carol}"}
    )
    assert response.status_code == 200
    lines = response.text.splitlines(keepends=True)
    report = verify_export(lines, world.verifier, ORIGIN)
    assert report.fault is None
    assert report.records == len(lines) - 1 == 2  # alice's accepted and outcome records
    exported = tmp_path / "audit.jsonl"
    exported.write_text(response.text)
    env = {
        "ENCLAVE_AUDIT__ORIGIN": ORIGIN,
        "ENCLAVE_AUDIT__VERIFIER_KEY": world.verifier.key_string,
    }
    ok = run_cli(env, "audit", "verify-export", str(exported))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    data = bytearray(exported.read_bytes())
    position = data.index(b'\\"status\\":200') + len(b'\\"status\\":2')
    data[position] = ord("1")  # 200 -> 210 in one record's text
    exported.write_bytes(bytes(data))
    bad = run_cli(env, "audit", "verify-export", str(exported))
    assert bad.returncode == 1
    assert "FAILED: leaf_mismatch" in bad.stdout


async def test_a_csv_export_holds_the_search(world: World) -> None:
    response = await world.stack.client.get(
        "/audit/export",
        params={"format": "csv", "event": "accepted"},
        headers={"Authorization": f"Bearer {world.dora}"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["request_id"] for r in rows} == set(world.requests.values())
    assert all(r["event"] == "accepted" and r["status"] == "202" for r in rows)


async def test_verification_over_the_api_finds_an_edited_record(world: World) -> None:
    ok = await world.stack.client.post(
        "/audit/verify", headers={"Authorization": f"Bearer {world.carol}"}
    )
    assert ok.json()["ok"] is True
    assert ok.json()["records"] >= 4
    async with world.stack.audit_db.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(
            text(
                "UPDATE audit_log SET data = convert_to("
                "replace(convert_from(data, 'UTF8'), :old, :new), 'UTF8') WHERE seq = 0"
            ),
            {"old": '"status":202', "new": '"status":203'},
        )
    bad = await world.stack.client.post(
        "/audit/verify", headers={"Authorization": f"Bearer {world.carol}"}
    )
    assert bad.json()["ok"] is False
    assert bad.json()["fault"]["seq"] == 0


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


async def test_two_checkpoints_are_proven_consistent_without_the_log(world: World) -> None:
    async def newest_checkpoint() -> Checkpoint:
        seq = (await world.get(world.dora, "/audit/records", limit=1000))["data"][-1]["seq"]
        view = await world.get(world.dora, f"/audit/records/{seq}")  # signs a covering head
        return open_checkpoint(view["proof"]["checkpoint"], world.verifier, ORIGIN)

    old = await newest_checkpoint()
    response = await world.stack.client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {world.alice}"}
    )
    assert response.status_code == 200
    await world.sequenced()
    new = await newest_checkpoint()
    assert new.size > old.size

    answer = await world.get(
        world.carol, "/audit/consistency", old_size=old.size, new_size=new.size
    )
    proof = [bytes.fromhex(h) for h in answer["proof"]]
    assert merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    forged = bytes(32)
    assert not merkle.verify_consistency(old.size, new.size, forged, new.root_hash, proof)

    for params in ({"old_size": 0, "new_size": 1}, {"old_size": 2, "new_size": 10**6}):
        bad = await world.stack.client.get(
            "/audit/consistency", params=params, headers={"Authorization": f"Bearer {world.carol}"}
        )
        assert bad.status_code == 400
