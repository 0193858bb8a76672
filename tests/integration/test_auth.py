"""API-key authentication seen from the outside: every failure is a 401 envelope and audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.auth.api_keys import revoke_key
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


async def _assert_refused(stack: Stack, headers: dict[str, str], reason: str) -> None:
    response = await stack.client.post("/v1/chat/completions", json=BODY, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    rows = await stack.audit_rows()
    assert [(r.event, r.status, r.error_code) for r in rows] == [("refused", 401, reason)]
    assert stack.engine.requests == []


async def test_missing_key(stack: Stack) -> None:
    await _assert_refused(stack, {}, "missing_api_key")


async def test_wrong_key(stack: Stack) -> None:
    key = await stack.key()
    forged = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    await _assert_refused(stack, {"Authorization": f"Bearer {forged}"}, "invalid_api_key")


async def test_garbage_key(stack: Stack) -> None:
    await _assert_refused(stack, {"Authorization": "Bearer sk-not-ours"}, "invalid_api_key")


async def test_revoked_key(stack: Stack) -> None:
    key = await stack.key()
    async with stack.sessions() as session:
        assert await revoke_key(session, key.split("_")[1])
    await _assert_refused(stack, {"Authorization": f"Bearer {key}"}, "revoked_api_key")


async def test_expired_key(stack: Stack) -> None:
    key = await stack.key(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await _assert_refused(stack, {"Authorization": f"Bearer {key}"}, "expired_api_key")


async def test_valid_key_is_accepted_and_attributed(stack: Stack) -> None:
    key = await stack.key(tenant="cardiology", user="dr-house")
    response = await stack.client.post(
        "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    rows = await stack.audit_rows()
    assert {r.tenant_id for r in rows} != {None}
    assert len({(r.tenant_id, r.user_id, r.key_id) for r in rows}) == 1


async def test_key_secret_is_stored_only_as_a_digest(stack: Stack) -> None:
    key = await stack.key()
    async with stack.db.connect() as conn:
        from sqlalchemy import text

        rows = (await conn.execute(text("SELECT * FROM api_keys"))).all()
    dumped = repr(rows)
    assert key not in dumped
    assert key.split("_", 2)[2] not in dumped
