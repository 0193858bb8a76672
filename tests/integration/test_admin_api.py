"""The admin API from the outside: every endpoint, who may call it, and what another
tenant's admin learns (nothing: its objects answer like ids that do not exist)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select, text

from gateway.auth.api_keys import hash_key
from gateway.db.models import ApiKey
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack
from tests.processes import free_port

pytestmark = pytest.mark.integration

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
ERROR_FIELDS = {"message", "type", "param", "code"}

# Every admin endpoint; {tenant}, {user} and {key} stand for the ids of one tenant's objects.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/admin/v1/tenants", {"name": "initech"}),
    ("GET", "/admin/v1/tenants", None),
    ("GET", "/admin/v1/tenants/{tenant}", None),
    ("PATCH", "/admin/v1/tenants/{tenant}", {"is_disabled": True}),
    ("GET", "/admin/v1/tenants/{tenant}/models", None),
    ("PUT", "/admin/v1/tenants/{tenant}/models", {"models": []}),
    ("POST", "/admin/v1/users", {"name": "ci-bot", "tenant_id": "{tenant}"}),
    ("GET", "/admin/v1/users", None),
    ("GET", "/admin/v1/users/{user}", None),
    ("PATCH", "/admin/v1/users/{user}", {"is_disabled": True}),
    ("POST", "/admin/v1/keys", {"user_id": "{user}", "name": "ci"}),
    ("GET", "/admin/v1/keys", None),
    ("GET", "/admin/v1/keys/{key}", None),
    ("DELETE", "/admin/v1/keys/{key}", None),
]


def _params(endpoints: list[tuple[str, str, dict[str, Any] | None]]) -> list[Any]:
    return [pytest.param(m, p, b, id=f"{m} {p}") for m, p, b in endpoints]


def _names_an_object(path: str, body: dict[str, Any] | None) -> bool:
    return any("{" + kind + "}" in path + str(body) for kind in ("tenant", "user", "key"))


ALL = _params(ENDPOINTS)
BY_ID = _params([e for e in ENDPOINTS if _names_an_object(e[1], e[2])])
# The listings, each with a filter naming one tenant's object, and the kind its cursor names.
LISTINGS = [
    pytest.param("/admin/v1/tenants", {}, "tenant", id="GET /admin/v1/tenants"),
    pytest.param("/admin/v1/users", {"tenant_id": "{tenant}"}, "user", id="GET /admin/v1/users"),
    pytest.param("/admin/v1/keys", {"user_id": "{user}"}, "key", id="GET /admin/v1/keys"),
]


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


@dataclass
class Acting:
    """A key and the rows behind it."""

    key: str
    key_id: str
    user_id: str
    tenant_id: str


@dataclass
class World:
    """Tenant acme (admin ann, users alice and audrey the auditor), tenant globex (admin
    gus), and root, the platform_admin of tenant ops."""

    stack: Stack
    root: Acting
    ann: Acting
    alice: Acting
    audrey: Acting
    gus: Acting

    @property
    def acme(self) -> dict[str, str]:
        """The ids of acme objects: the tenant, alice, alice's key."""
        return {
            "tenant": self.alice.tenant_id,
            "user": self.alice.user_id,
            "key": self.alice.key_id,
        }

    async def call(
        self,
        who: Acting | None,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        ids: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        ids = ids or self.acme
        return await self.stack.client.request(
            method,
            fill(path, ids),
            json=fill(body, ids),
            params=fill(params, ids),
            headers=bearer(who.key if who else None),
        )


async def acting(stack: Stack, tenant: str, user: str, roles: frozenset[str]) -> Acting:
    key = await stack.key(tenant=tenant, user=user, roles=roles)
    async with stack.sessions() as session:
        row = (
            await session.scalars(select(ApiKey).where(ApiKey.prefix == key.split("_")[1]))
        ).one()
    return Acting(key=key, key_id=row.id, user_id=row.user_id, tenant_id=row.tenant_id)


async def make_world(stack: Stack) -> World:
    return World(
        stack=stack,
        root=await acting(stack, "ops", "root", frozenset({"platform_admin"})),
        ann=await acting(stack, "acme", "ann", frozenset({"tenant_admin"})),
        alice=await acting(stack, "acme", "alice", frozenset()),
        audrey=await acting(stack, "acme", "audrey", frozenset({"auditor"})),
        gus=await acting(stack, "globex", "gus", frozenset({"tenant_admin"})),
    )


@pytest.fixture
async def world(stack: Stack) -> World:
    return await make_world(stack)


async def identity_rows(stack: Stack) -> list[tuple[Any, ...]]:
    """Every tenant, user and key row, to show a refused call changed nothing."""
    async with stack.db.connect() as conn:
        return [
            tuple(row)
            for table in ("tenants", "users", "api_keys")
            for row in (await conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))).all()
        ]


async def chat(world: World, who: Acting) -> httpx.Response:
    return await world.stack.client.post("/v1/chat/completions", json=CHAT, headers=bearer(who.key))


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_FIELDS, body
    error: dict[str, Any] = body["error"]
    return error


def assert_same_refusal(
    hidden: httpx.Response, hidden_id: str, missing: httpx.Response, missing_id: str
) -> None:
    """Two refusals that differ only by the id they name."""
    assert hidden.status_code == missing.status_code
    one, other = error_of(hidden), error_of(missing)
    assert one["message"].replace(hidden_id, "<id>") == other["message"].replace(missing_id, "<id>")
    assert (one["type"], one["code"], one["param"]) == (
        other["type"],
        other["code"],
        other["param"],
    )


# --- who may call ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ALL)
async def test_no_key_is_401_and_plain_users_and_auditors_are_403(
    world: World, method: str, path: str, body: dict[str, Any] | None
) -> None:
    before = await identity_rows(world.stack)
    anonymous = await world.call(None, method, path, body)
    as_user = await world.call(world.alice, method, path, body)
    as_auditor = await world.call(world.audrey, method, path, body)
    assert anonymous.status_code == 401
    assert error_of(anonymous)["code"] == "invalid_api_key"
    for response in (as_user, as_auditor):
        assert response.status_code == 403, response.text
        error = error_of(response)
        assert error["code"] == "permission_denied"
        assert "tenant_admin or the platform_admin role" in error["message"]
    assert await identity_rows(world.stack) == before
    rows = await world.stack.audit_rows()
    assert [(r.event, r.status) for r in rows] == [
        ("refused", 401),
        ("refused", 403),
        ("refused", 403),
    ]
    assert [r.user_id for r in rows] == [None, world.alice.user_id, world.audrey.user_id]


@pytest.mark.parametrize(("method", "path", "body"), BY_ID)
async def test_another_tenants_admin_gets_404_for_acme_objects(
    world: World, method: str, path: str, body: dict[str, Any] | None
) -> None:
    before = await identity_rows(world.stack)
    missing_ids = {kind: str(uuid.uuid4()) for kind in ("tenant", "user", "key")}
    hidden = await world.call(world.gus, method, path, body)
    missing = await world.call(world.gus, method, path, body, ids=missing_ids)
    assert hidden.status_code == 404, hidden.text
    assert error_of(hidden)["code"] in {"tenant_not_found", "user_not_found", "key_not_found"}
    kind = next(kind for kind in ("tenant", "user", "key") if "{" + kind + "}" in path + str(body))
    assert_same_refusal(hidden, world.acme[kind], missing, missing_ids[kind])
    assert await identity_rows(world.stack) == before
    rows = await world.stack.audit_rows()
    assert [(r.event, r.status, r.user_id) for r in rows] == [
        ("refused", 404, world.gus.user_id)
    ] * 2
    # The object exists: the platform admin reaches it with the very same call.
    assert (await world.call(world.root, method, path, body)).status_code in {200, 201}


@pytest.mark.parametrize(("path", "params", "kind"), LISTINGS)
async def test_listings_hide_acme_objects_from_another_tenants_admin(
    world: World, path: str, params: dict[str, str], kind: str
) -> None:
    as_root = (await world.call(world.root, "GET", path, params=params)).json()
    as_gus = (await world.call(world.gus, "GET", path, params=params)).json()
    acme_id = world.acme[kind]
    assert acme_id in {item["id"] for item in as_root["data"]}
    assert acme_id not in {item["id"] for item in as_gus["data"]}
    assert {item.get("tenant_id", item["id"]) for item in as_gus["data"]} <= {world.gus.tenant_id}
    # Its id as a cursor is refused exactly like an id that does not exist.
    missing_id = str(uuid.uuid4())
    hidden = await world.call(world.gus, "GET", path, params={"after": acme_id})
    missing = await world.call(world.gus, "GET", path, params={"after": missing_id})
    assert hidden.status_code == 400
    assert error_of(hidden)["param"] == "after"
    assert_same_refusal(hidden, acme_id, missing, missing_id)


@pytest.mark.parametrize(("method", "path", "body"), BY_ID)
async def test_malformed_ids_are_404_envelopes(
    world: World, method: str, path: str, body: dict[str, Any] | None
) -> None:
    malformed = {"tenant": "not-a-uuid", "user": "1 OR 1=1", "key": "%00"}
    response = await world.call(world.root, method, path, body, ids=malformed)
    assert response.status_code == 404, response.text
    assert error_of(response)["code"].endswith("_not_found")


# --- tenants -------------------------------------------------------------------------------


async def test_platform_admin_creates_reads_and_disables_tenants(world: World) -> None:
    created = await world.call(world.root, "POST", "/admin/v1/tenants", {"name": " initech "})
    assert created.status_code == 201, created.text
    tenant = created.json()
    assert tenant["object"] == "tenant"
    assert (tenant["name"], tenant["is_disabled"], tenant["allowed_models"]) == (
        "initech",
        False,
        None,
    )
    again = await world.call(world.root, "POST", "/admin/v1/tenants", {"name": "initech"})
    assert again.status_code == 409
    assert error_of(again)["code"] == "tenant_exists"
    ids = {"tenant": tenant["id"]}
    assert (await world.call(world.root, "GET", "/admin/v1/tenants/{tenant}", ids=ids)).json() == (
        tenant
    )
    listed = (await world.call(world.root, "GET", "/admin/v1/tenants")).json()
    assert listed["object"] == "list"
    assert {t["name"] for t in listed["data"]} == {"ops", "acme", "globex", "initech"}
    disabled = await world.call(
        world.root, "PATCH", "/admin/v1/tenants/{tenant}", {"is_disabled": True}, ids=ids
    )
    assert disabled.json()["is_disabled"] is True
    admin_rows = [r for r in await world.stack.audit_rows() if r.event == "admin"]
    assert [(r.target, r.change, r.status) for r in admin_rows] == [
        (f"tenant:{tenant['id']}", {"action": "create_tenant", "name": "initech"}, 201),
        (
            f"tenant:{tenant['id']}",
            {"action": "update_tenant", "is_disabled": {"old": False, "new": True}},
            200,
        ),
    ]


async def test_tenant_admin_reads_its_own_tenant_but_may_not_change_it(world: World) -> None:
    listed = (await world.call(world.ann, "GET", "/admin/v1/tenants")).json()
    assert [t["id"] for t in listed["data"]] == [world.ann.tenant_id]
    assert listed["has_more"] is False
    own = await world.call(world.ann, "GET", "/admin/v1/tenants/{tenant}")
    assert own.json()["name"] == "acme"
    models = await world.call(world.ann, "GET", "/admin/v1/tenants/{tenant}/models")
    assert models.json() == {
        "tenant_id": world.ann.tenant_id,
        "models": None,
        "object": "tenant.models",
    }
    before = await identity_rows(world.stack)
    refused = [
        await world.call(world.ann, "POST", "/admin/v1/tenants", {"name": "mine"}),
        await world.call(world.ann, "PATCH", "/admin/v1/tenants/{tenant}", {"is_disabled": True}),
        await world.call(world.ann, "PUT", "/admin/v1/tenants/{tenant}/models", {"models": None}),
    ]
    for response in refused:
        assert response.status_code == 403
        assert "Only a platform_admin may" in error_of(response)["message"]
    assert await identity_rows(world.stack) == before


async def test_disabling_a_tenant_stops_its_keys_at_the_next_request(world: World) -> None:
    assert (await chat(world, world.alice)).status_code == 200
    patched = await world.call(
        world.root, "PATCH", "/admin/v1/tenants/{tenant}", {"is_disabled": True}
    )
    assert patched.status_code == 200
    assert (await chat(world, world.alice)).status_code == 401
    assert (await chat(world, world.gus)).status_code == 200
    await world.call(world.root, "PATCH", "/admin/v1/tenants/{tenant}", {"is_disabled": False})
    assert (await chat(world, world.alice)).status_code == 200


async def test_a_platform_admin_may_not_disable_its_own_tenant(world: World) -> None:
    own = {"tenant": world.root.tenant_id}
    response = await world.call(
        world.root, "PATCH", "/admin/v1/tenants/{tenant}", {"is_disabled": True}, ids=own
    )
    assert response.status_code == 403
    assert error_of(response)["code"] == "self_change_refused"


async def test_model_access_limits_what_the_tenant_may_call_and_see(world: World) -> None:
    async def visible() -> set[str]:
        response = await world.stack.client.get("/v1/models", headers=bearer(world.alice.key))
        return {card["id"] for card in response.json()["data"]}

    assert "fake-model" in await visible()
    path = "/admin/v1/tenants/{tenant}/models"
    put = await world.call(world.root, "PUT", path, {"models": ["other-model", "other-model"]})
    assert put.json() == {
        "tenant_id": world.alice.tenant_id,
        "models": ["other-model"],
        "object": "tenant.models",
    }
    assert (await world.call(world.ann, "GET", path)).json()["models"] == ["other-model"]
    refused = await chat(world, world.alice)
    assert refused.status_code == 404
    assert error_of(refused)["code"] == "model_not_found"
    assert "fake-model" not in await visible()
    assert (await chat(world, world.gus)).status_code == 200  # other tenants keep every model
    await world.call(world.root, "PUT", path, {"models": None})
    assert (await chat(world, world.alice)).status_code == 200
    changes = [r.change for r in await world.stack.audit_rows() if r.event == "admin"]
    assert changes == [
        {"action": "set_model_access", "allowed_models": {"old": None, "new": ["other-model"]}},
        {"action": "set_model_access", "allowed_models": {"old": ["other-model"], "new": None}},
    ]


async def test_model_access_needs_an_explicit_models_field(world: World) -> None:
    path = "/admin/v1/tenants/{tenant}/models"
    assert (await world.call(world.root, "PUT", path, {})).status_code == 400
    assert (await world.call(world.root, "PUT", path, {"models": [""]})).status_code == 400
    too_long = await world.call(world.root, "PUT", path, {"models": ["m" * 200] * 100})
    assert (too_long.status_code, error_of(too_long)["code"]) == (413, "request_too_large")


# --- users ---------------------------------------------------------------------------------


async def test_tenant_admin_lists_reads_and_grants_roles_in_its_tenant(world: World) -> None:
    listed = (await world.call(world.ann, "GET", "/admin/v1/users")).json()
    assert {u["name"] for u in listed["data"]} == {"ann", "alice", "audrey"}
    alice = (await world.call(world.ann, "GET", "/admin/v1/users/{user}")).json()
    assert alice["object"] == "user"
    assert (alice["tenant_id"], alice["issuer"], alice["subject"], alice["is_disabled"]) == (
        world.alice.tenant_id,
        None,
        None,
        False,
    )
    assert (alice["idp_roles"], alice["granted_roles"], alice["roles"]) == ([], [], ["user"])
    assert {"created_at", "last_seen_at"} <= set(alice)
    granted = await world.call(
        world.ann, "PATCH", "/admin/v1/users/{user}", {"granted_roles": ["auditor", "user"]}
    )
    assert granted.status_code == 200, granted.text
    assert (granted.json()["granted_roles"], granted.json()["roles"]) == (
        ["auditor"],
        ["auditor", "user"],
    )
    (row,) = [r for r in await world.stack.audit_rows() if r.event == "admin"]
    assert row.target == f"user:{world.alice.user_id}"
    assert row.change == {
        "action": "update_user",
        "tenant_id": world.alice.tenant_id,
        "granted_roles": {"old": [], "new": ["auditor"]},
    }
    assert (row.tenant_id, row.user_id, row.key_id) == (
        world.ann.tenant_id,
        world.ann.user_id,
        world.ann.key_id,
    )


async def test_platform_admin_lists_users_of_any_tenant(world: World) -> None:
    globex = {"tenant": world.gus.tenant_id}
    listed = await world.call(
        world.root, "GET", "/admin/v1/users", ids=globex, params={"tenant_id": "{tenant}"}
    )
    assert [u["name"] for u in listed.json()["data"]] == ["gus"]
    everyone = (await world.call(world.root, "GET", "/admin/v1/users")).json()["data"]
    assert {u["name"] for u in everyone} == {"root", "ann", "alice", "audrey", "gus"}


async def test_disabling_a_user_stops_its_key_at_the_next_request(world: World) -> None:
    assert (await chat(world, world.alice)).status_code == 200
    patched = await world.call(world.ann, "PATCH", "/admin/v1/users/{user}", {"is_disabled": True})
    assert patched.json()["is_disabled"] is True
    assert (await chat(world, world.alice)).status_code == 401
    assert (await chat(world, world.audrey)).status_code == 200  # the rest of acme goes on
    await world.call(world.ann, "PATCH", "/admin/v1/users/{user}", {"is_disabled": False})
    assert (await chat(world, world.alice)).status_code == 200


async def test_admins_may_not_raise_their_own_roles_nor_lock_themselves_out(world: World) -> None:
    ann = {"user": world.ann.user_id}
    path = "/admin/v1/users/{user}"
    before = await identity_rows(world.stack)
    escalate = await world.call(
        world.ann, "PATCH", path, {"granted_roles": ["tenant_admin", "platform_admin"]}, ids=ann
    )
    widen = await world.call(
        world.ann, "PATCH", path, {"granted_roles": ["tenant_admin", "auditor"]}, ids=ann
    )
    disable = await world.call(world.ann, "PATCH", path, {"is_disabled": True}, ids=ann)
    demote = await world.call(
        world.root, "PATCH", path, {"granted_roles": []}, ids={"user": world.root.user_id}
    )
    assert [r.status_code for r in (escalate, widen, disable, demote)] == [403] * 4
    assert [error_of(r)["code"] for r in (widen, disable, demote)] == ["self_change_refused"] * 3
    assert await identity_rows(world.stack) == before
    # Sending what is already there changes nothing and is allowed.
    same = await world.call(world.ann, "PATCH", path, {"granted_roles": ["tenant_admin"]}, ids=ann)
    assert same.status_code == 200


async def test_only_a_platform_admin_grants_or_manages_platform_admin(world: World) -> None:
    path = "/admin/v1/users/{user}"
    grant = {"granted_roles": ["platform_admin"]}
    assert (await world.call(world.ann, "PATCH", path, grant)).status_code == 403
    unknown = await world.call(world.ann, "PATCH", path, {"granted_roles": ["superuser"]})
    assert (unknown.status_code, error_of(unknown)["param"]) == (400, "granted_roles")
    assert (await world.call(world.root, "PATCH", path, grant)).status_code == 200
    # alice now holds platform_admin: her tenant's admin may neither change her nor mint her keys.
    refused = [
        await world.call(world.ann, "PATCH", path, {"is_disabled": True}),
        await world.call(world.ann, "POST", "/admin/v1/keys", {"user_id": "{user}", "name": "x"}),
        await world.call(world.ann, "DELETE", "/admin/v1/keys/{key}"),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert (await chat(world, world.alice)).status_code == 200


async def test_unknown_fields_are_refused_with_400(world: World) -> None:
    response = await world.call(
        world.root, "PATCH", "/admin/v1/users/{user}", {"is_disabled": True, "is_admin": True}
    )
    assert response.status_code == 400
    assert "is_admin" in error_of(response)["message"]
    assert (await chat(world, world.alice)).status_code == 200


# --- keys ----------------------------------------------------------------------------------


async def test_a_service_key_secret_is_shown_once(world: World) -> None:
    created = await world.call(
        world.ann,
        "POST",
        "/admin/v1/keys",
        {"user_id": "{user}", "name": "ci", "expires_in_days": 30},
    )
    assert created.status_code == 201, created.text
    new = created.json()
    assert (new["kind"], new["user_id"], new["tenant_id"], new["name"]) == (
        "service",
        world.alice.user_id,
        world.alice.tenant_id,
        "ci",
    )
    assert new["key"].startswith(f"enc_{new['prefix']}_")
    assert new["expires_at"] is not None
    agent = Acting(new["key"], new["id"], world.alice.user_id, world.alice.tenant_id)
    assert (await chat(world, agent)).status_code == 200
    shown = await world.call(world.ann, "GET", "/admin/v1/keys/{key}", ids={"key": new["id"]})
    listed = await world.call(world.ann, "GET", "/admin/v1/keys", params={"user_id": "{user}"})
    assert shown.json()["id"] == new["id"]
    assert new["id"] in {k["id"] for k in listed.json()["data"]}
    everything_after = (
        shown.text + listed.text + repr([r.change for r in await world.stack.audit_rows()])
    )
    assert new["key"] not in everything_after
    assert hash_key(new["key"]) not in everything_after
    assert "key" not in shown.json()
    assert "secret_sha256" not in everything_after


async def test_revoking_a_key_stops_it_and_is_idempotent(world: World) -> None:
    assert (await chat(world, world.alice)).status_code == 200
    first = await world.call(world.ann, "DELETE", "/admin/v1/keys/{key}")
    assert first.status_code == 200
    assert first.json()["revoked_at"] is not None
    assert (await chat(world, world.alice)).status_code == 401
    second = await world.call(world.ann, "DELETE", "/admin/v1/keys/{key}")
    assert second.json() == first.json()
    admin_rows = [r for r in await world.stack.audit_rows() if r.event == "admin"]
    assert [(r.target, r.change) for r in admin_rows] == [
        (
            f"api_key:{world.alice.key_id}",
            {
                "action": "revoke_key",
                "tenant_id": world.alice.tenant_id,
                "user_id": world.alice.user_id,
                "prefix": world.alice.key.split("_")[1],
            },
        )
    ]


async def test_platform_admin_manages_keys_in_any_tenant(world: World) -> None:
    gus = {"user": world.gus.user_id, "key": world.gus.key_id}
    created = await world.call(
        world.root, "POST", "/admin/v1/keys", {"user_id": "{user}", "name": "r"}, ids=gus
    )
    assert created.status_code == 201
    assert created.json()["tenant_id"] == world.gus.tenant_id
    revoked = await world.call(world.root, "DELETE", "/admin/v1/keys/{key}", ids=gus)
    assert revoked.status_code == 200
    assert (await chat(world, world.gus)).status_code == 401


async def test_key_expiry_is_bounded(world: World) -> None:
    body = {"user_id": "{user}", "name": "x", "expires_in_days": 0}
    response = await world.call(world.ann, "POST", "/admin/v1/keys", body)
    assert (response.status_code, error_of(response)["param"]) == (400, "expires_in_days")


# --- pages, audit, OpenAPI -----------------------------------------------------------------


async def test_listings_are_paged_stably_and_bounded(world: World) -> None:
    for n in range(5):
        await world.call(world.root, "POST", "/admin/v1/tenants", {"name": f"t{n}"})
    everything = (await world.call(world.root, "GET", "/admin/v1/tenants")).json()["data"]
    assert len(everything) == 8
    order = [(datetime.fromisoformat(t["created_at"]), t["id"]) for t in everything]
    assert order == sorted(order)
    walked: list[dict[str, Any]] = []
    pages: list[bool] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = (await world.call(world.root, "GET", "/admin/v1/tenants", params=params)).json()
        walked += page["data"]
        pages.append(page["has_more"])
        if not page["has_more"]:
            break
        params = {"limit": 3, "after": page["data"][-1]["id"]}
    assert walked == everything
    assert pages == [True, True, False]
    for limit in (0, 1001):
        response = await world.call(world.root, "GET", "/admin/v1/tenants", params={"limit": limit})
        assert (response.status_code, error_of(response)["param"]) == (400, "limit")


async def test_no_audit_record_no_change(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> None:
    dead_audit = f"postgresql+asyncpg://enclave@127.0.0.1:{free_port()}/audit"
    async with open_stack(
        make_postgres_url(), redis_url, FakeEngine(), audit_url=dead_audit
    ) as stack:
        world = await make_world(stack)
        before = await identity_rows(stack)
        response = await world.call(
            world.ann, "PATCH", "/admin/v1/users/{user}", {"is_disabled": True}
        )
        assert response.status_code == 503
        assert error_of(response)["code"] == "audit_unavailable"
        assert await identity_rows(stack) == before


async def test_openapi_describes_the_admin_api_without_an_html_viewer(stack: Stack) -> None:
    response = await stack.client.get("/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for method, path, body in ENDPOINTS:
        templated = path.replace("{tenant}", "{tenant_id}").replace("{user}", "{user_id}")
        operation = paths[templated.replace("{key}", "{key_id}")][method.lower()]
        success = operation["responses"]["201" if method == "POST" else "200"]
        assert success["content"]["application/json"]["schema"]["$ref"].startswith(
            "#/components/schemas/"
        )
        if body is not None:
            assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert operation["security"] == [{"bearer": []}]
    components = schema["components"]["schemas"]
    assert set(components["UserUpdate"]["properties"]) == {"is_disabled", "granted_roles"}
    assert "key" not in components["KeyInfo"]["properties"]
    assert components["CreatedKey"]["properties"]["key"]["type"] == "string"
    assert (await stack.client.get("/schema/openapi.yaml")).status_code == 200
    for viewer in ("swagger", "redoc", "elements", "rapidoc"):
        page = await stack.client.get(f"/schema/{viewer}")
        assert page.status_code == 404
        assert "<script" not in page.text


# --- service accounts ----------------------------------------------------------------------


async def test_service_accounts_are_created_by_admins_and_hold_service_keys(world: World) -> None:
    created = await world.call(world.ann, "POST", "/admin/v1/users", {"name": "ci-bot"})
    assert created.status_code == 201, created.text
    bot = created.json()
    assert (bot["tenant_id"], bot["issuer"], bot["roles"]) == (world.ann.tenant_id, None, ["user"])

    key = await world.call(
        world.ann, "POST", "/admin/v1/keys", {"user_id": bot["id"], "name": "pipeline"}
    )
    assert key.status_code == 201, key.text
    response = await world.stack.client.post(
        "/v1/chat/completions", json=CHAT, headers=bearer(key.json()["key"])
    )
    assert response.status_code == 200
    again = await world.call(world.ann, "POST", "/admin/v1/users", {"name": "ci-bot"})
    assert (again.status_code, error_of(again)["code"]) == (409, "user_exists")
    rows = [r for r in await world.stack.audit_rows() if r.event == "admin"]
    assert [(r.target, (r.change or {}).get("action")) for r in rows] == [
        (f"user:{bot['id']}", "create_service_user"),
        (f"api_key:{key.json()['id']}", "create_key"),
    ]


async def test_a_platform_admin_names_the_tenant_of_a_service_account(world: World) -> None:
    missing = await world.call(world.root, "POST", "/admin/v1/users", {"name": "bot"})
    assert (missing.status_code, error_of(missing)["param"]) == (400, "tenant_id")
    created = await world.call(
        world.root, "POST", "/admin/v1/users", {"name": "bot", "tenant_id": world.gus.tenant_id}
    )
    assert created.json()["tenant_id"] == world.gus.tenant_id


async def test_no_admin_makes_a_key_for_a_person_of_an_identity_provider(world: World) -> None:
    # alice as the gateway provisions a person on first sign-in: issuer and subject set.
    async with world.stack.db.begin() as conn:
        await conn.execute(
            text("UPDATE users SET issuer = :iss, subject = :sub WHERE id = :id"),
            {"iss": "https://sso.example.org", "sub": "alice", "id": world.alice.user_id},
        )
    before = await identity_rows(world.stack)

    for admin in (world.ann, world.root):
        response = await world.call(
            admin, "POST", "/admin/v1/keys", {"user_id": world.alice.user_id, "name": "x"}
        )
        assert response.status_code == 403
        assert error_of(response)["code"] == "service_key_for_person"
    assert await identity_rows(world.stack) == before
