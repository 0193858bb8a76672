"""Tenants and their model access.

POST  /admin/v1/tenants               create (platform_admin)
GET   /admin/v1/tenants               list: every tenant, or a tenant_admin's own
GET   /admin/v1/tenants/{id}          one
PATCH /admin/v1/tenants/{id}          enable or disable; scheduling class and weight; content
                                      and hold settings (platform_admin)
GET   /admin/v1/tenants/{id}/models   the models the tenant may use
PUT   /admin/v1/tenants/{id}/models   set them; null for every model (platform_admin)

A tenant_admin may read its own tenant but not widen its own model access.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.api.admin.bodies import MAX_BODY_BYTES, described_body, read_json
from gateway.api.admin.pages import DEFAULT_LIMIT, After, Limit, page
from gateway.api.admin.scope import BEARER, AdminScope, admin_call, tenant_in_scope
from gateway.api.intake import Intake, record_action
from gateway.auth.authenticator import Authenticator
from gateway.db.models import Tenant
from gateway.errors import Conflict, InvalidRequest
from gateway.inference import InferenceService
from gateway.schemas.identity import (
    ModelAccess,
    ModelAccessUpdate,
    TenantInfo,
    TenantPage,
    TenantRequest,
    TenantUpdate,
)

TENANTS = "/admin/v1/tenants"
TENANT = "/admin/v1/tenants/{id}"
TENANT_MODELS = "/admin/v1/tenants/{id}/models"
MAX_TENANT_NAME_LENGTH = 128
MAX_MODEL_NAME_LENGTH = 255
MAX_WEIGHT = 1000.0


def tenant_info(tenant: Tenant) -> TenantInfo:
    return TenantInfo(
        id=tenant.id,
        name=tenant.name,
        is_disabled=tenant.is_disabled,
        allowed_models=tenant.allowed_models,
        created_at=tenant.created_at,
        keep_content=tenant.keep_content,
        content_retention_days=tenant.content_retention_days,
        legal_hold=tenant.legal_hold,
        priority=tenant.priority,
        weight=tenant.weight,
    )


def tenant_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_TENANT_NAME_LENGTH or not name.isprintable():
        raise InvalidRequest(
            f"name must be printable, non-empty and at most {MAX_TENANT_NAME_LENGTH} characters.",
            param="name",
        )
    return name


def model_names(models: list[str] | None) -> list[str] | None:
    """The allow-list to store, sorted without duplicates; None stays None (every model)."""
    if models is None:
        return None
    for model in models:
        if not model.strip() or len(model) > MAX_MODEL_NAME_LENGTH or not model.isprintable():
            raise InvalidRequest(
                f"Each model must be a printable, non-empty name of at most "
                f"{MAX_MODEL_NAME_LENGTH} characters; got {model!r}.",
                param="models",
            )
    return sorted(set(models))


def settings_changes(tenant: Tenant, body: TenantUpdate) -> dict[str, Any]:
    """Apply the body's scheduling, content and hold settings to ``tenant``; the changes
    made."""
    if body.content_retention_days is not None and not 0 <= body.content_retention_days <= 36500:
        raise InvalidRequest(
            "content_retention_days must be between 0 (the default) and 36500.",
            param="content_retention_days",
        )
    if body.weight is not None and not (0 < body.weight <= MAX_WEIGHT):  # refuses nan too
        raise InvalidRequest(f"weight must be above 0 and at most {MAX_WEIGHT:g}.", param="weight")
    wanted: dict[str, Any] = {}
    if body.priority is not None:
        wanted["priority"] = body.priority
    if body.weight is not None:
        wanted["weight"] = body.weight
    if body.keep_content is not None:
        wanted["keep_content"] = body.keep_content
    if body.content_retention_days is not None:
        wanted["content_retention_days"] = body.content_retention_days or None
    if body.legal_hold is not None:
        wanted["legal_hold"] = body.legal_hold
    changes: dict[str, Any] = {}
    for name, new in wanted.items():
        old = getattr(tenant, name)
        if new != old:
            changes[name] = {"old": old, "new": new}
            setattr(tenant, name, new)
    return changes


async def add_tenant(
    session: AsyncSession, inference: InferenceService, intake: Intake, scope: AdminScope, name: str
) -> Tenant:
    """A new tenant (platform_admin) allowed every model; recorded, then committed (the API
    and the console both create tenants with this)."""
    scope.require_platform_admin("create tenants")
    name = tenant_name(name)
    tenant = Tenant(
        id=str(uuid.uuid4()),
        name=name,
        created_at=datetime.now(UTC),
        is_disabled=False,
        allowed_models=None,
    )
    session.add(tenant)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"A tenant named {name!r} exists already.", code="tenant_exists") from None
    await record_action(
        inference,
        intake,
        target=f"tenant:{tenant.id}",
        change={"action": "create_tenant", "name": name},
        status=201,
    )
    await session.commit()
    return tenant


async def tenant_to_change(
    session: AsyncSession, scope: AdminScope, tenant_id: str, action: str
) -> Tenant:
    """A tenant within reach, locked for a change only a platform_admin may make: 404 out of
    reach, then 403 for a tenant_admin (before any body is read)."""
    tenant = await tenant_in_scope(session, scope, tenant_id, for_update=True)
    scope.require_platform_admin(action)
    return tenant


async def apply_tenant_update(
    session: AsyncSession,
    inference: InferenceService,
    intake: Intake,
    scope: AdminScope,
    tenant: Tenant,
    body: TenantUpdate,
) -> None:
    """Apply ``body`` to a tenant from ``tenant_to_change``: each change recorded, then
    committed; nobody disables their own tenant."""
    if body.is_disabled is not None and body.is_disabled != tenant.is_disabled:
        if body.is_disabled and tenant.id == scope.principal.tenant_id:
            scope.refuse_self_change("disable your own tenant")
        change = {"old": tenant.is_disabled, "new": body.is_disabled}
        tenant.is_disabled = body.is_disabled
        await record_action(
            inference,
            intake,
            target=f"tenant:{tenant.id}",
            change={"action": "update_tenant", "is_disabled": change},
        )
        await session.commit()
    if changes := settings_changes(tenant, body):
        await record_action(
            inference,
            intake,
            target=f"tenant:{tenant.id}",
            change={"action": "update_tenant", **changes},
        )
        await session.commit()


async def apply_model_access(
    session: AsyncSession,
    inference: InferenceService,
    intake: Intake,
    tenant: Tenant,
    models: list[str] | None,
) -> None:
    """Set the allow-list of a tenant from ``tenant_to_change`` (None: every model); a
    change is recorded, then committed."""
    models = model_names(models)
    if models != tenant.allowed_models:
        change = {"old": tenant.allowed_models, "new": models}
        tenant.allowed_models = models
        await record_action(
            inference,
            intake,
            target=f"tenant:{tenant.id}",
            change={"action": "set_model_access", "allowed_models": change},
        )
        await session.commit()


class AdminTenantsController(Controller):
    path = TENANTS
    tags = ("admin",)
    security = (BEARER,)
    request_max_body_size = MAX_BODY_BYTES

    @post("", status_code=201, dependencies=described_body(TenantRequest))
    async def create_tenant(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> TenantInfo:
        """Create a tenant (platform_admin). 409 tenant_exists if the name is taken."""
        async with admin_call(request, inference, authenticator, TENANTS) as (intake, scope):
            scope.require_platform_admin("create tenants")  # refused before the body is read
            body = await read_json(request, TenantRequest)
            async with sessions() as session:
                tenant = await add_tenant(session, inference, intake, scope, body.name)
        return tenant_info(tenant)

    @get("")
    async def list_tenants(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        limit: Limit = DEFAULT_LIMIT,
        after: After = None,
    ) -> TenantPage:
        """Every tenant for a platform_admin; a tenant_admin's own tenant only."""
        async with admin_call(request, inference, authenticator, TENANTS) as (_, scope):
            query = select(Tenant).where(scope.restrict(Tenant.id))
            async with sessions() as session:
                rows, has_more = await page(session, query, Tenant, limit=limit, after=after)
        return TenantPage(data=[tenant_info(row) for row in rows], has_more=has_more)

    @get("/{tenant_id:str}")
    async def get_tenant(
        self,
        tenant_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> TenantInfo:
        """One tenant within the caller's reach."""
        async with (
            admin_call(request, inference, authenticator, TENANT) as (_, scope),
            sessions() as session,
        ):
            return tenant_info(await tenant_in_scope(session, scope, tenant_id))

    @patch("/{tenant_id:str}", dependencies=described_body(TenantUpdate))
    async def update_tenant(
        self,
        tenant_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> TenantInfo:
        """Disable or enable a tenant (its keys and tokens stop at once), set its scheduling
        class and weight, its content and hold settings (platform_admin)."""
        async with (
            admin_call(request, inference, authenticator, TENANT) as (intake, scope),
            sessions() as session,
        ):
            tenant = await tenant_to_change(session, scope, tenant_id, "change a tenant")
            body = await read_json(request, TenantUpdate)
            await apply_tenant_update(session, inference, intake, scope, tenant, body)
        return tenant_info(tenant)

    @get("/{tenant_id:str}/models")
    async def get_model_access(
        self,
        tenant_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> ModelAccess:
        """The models a tenant may use (null: every model)."""
        async with (
            admin_call(request, inference, authenticator, TENANT_MODELS) as (_, scope),
            sessions() as session,
        ):
            tenant = await tenant_in_scope(session, scope, tenant_id)
        return ModelAccess(tenant_id=tenant.id, models=tenant.allowed_models)

    @put("/{tenant_id:str}/models", dependencies=described_body(ModelAccessUpdate))
    async def set_model_access(
        self,
        tenant_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> ModelAccess:
        """Set the models a tenant may use, or null for every model (platform_admin)."""
        async with (
            admin_call(request, inference, authenticator, TENANT_MODELS) as (intake, scope),
            sessions() as session,
        ):
            tenant = await tenant_to_change(
                session, scope, tenant_id, "change a tenant's model access"
            )
            body = await read_json(request, ModelAccessUpdate)
            await apply_model_access(session, inference, intake, tenant, body.models)
        return ModelAccess(tenant_id=tenant.id, models=tenant.allowed_models)
