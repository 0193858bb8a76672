"""The console's quotas pages, for ``tenant_admin`` (its tenant) and ``platform_admin``
(every tenant): limits and usage per tenant, set with the admin API's own rules
(``gateway.api.admin.limits``: a tenant_admin sets its tenant's default per user, only a
platform_admin a tenant's total) and the same ``admin`` records.

GET  /console/admin/quotas                     tenants within reach: limits, today's usage
GET  /console/admin/quotas/{id}                one tenant: usage now, tokens per hour over
                                               the last 24 hours, the limits forms
POST /console/admin/quotas/{id}/{kind}         set the limits of ``tenant`` (its total) or
                                               ``tenant_user_default`` (each user's default)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from redis.asyncio import Redis

from gateway.api.admin.bodies import MAX_BODY_BYTES
from gateway.api.admin.limits import FIELDS, checked, scope_in_reach, store_limits
from gateway.api.admin.scope import require_admin, tenant_in_scope
from gateway.console.access import ConsoleServices, console_call
from gateway.console.charts import hourly_chart
from gateway.console.quota_views import (
    EDITABLE_KINDS,
    LABELS,
    limits_from_form,
    tenant_quotas,
    tenants_quotas,
)
from gateway.errors import NotFound

QUOTAS_PAGE = "/console/admin/quotas"
QUOTA_PAGE = "/console/admin/quotas/{id}"
LIMITS_FORM = "/console/admin/quotas/{id}/{kind}"
SAVED = {"tenant": "The tenant's total", "tenant_user_default": "The default per user"}


class QuotaPagesController(Controller):
    path = QUOTAS_PAGE
    request_max_body_size = MAX_BODY_BYTES

    @get("")
    async def tenants(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
        redis: NamedDependency[Redis],
    ) -> Template:
        async with (
            console_call(request, console, QUOTAS_PAGE, require_admin) as (_, scope, visit),
            console.db() as session,
        ):
            now = datetime.now(UTC)
            tenants = await tenants_quotas(session, redis, scope, now)
            context = visit.context(tenants=tenants, labels=LABELS, fields=FIELDS, now=now)
        return Template("admin_quotas.html.jinja", context=context)

    @get("/{tenant_id:str}")
    async def tenant(
        self,
        request: Request[Any, Any, Any],
        tenant_id: FromPath[str],
        console: NamedDependency[ConsoleServices],
        redis: NamedDependency[Redis],
        saved: FromQuery[str | None] = None,
    ) -> Template:
        async with (
            console_call(request, console, QUOTA_PAGE, require_admin) as (_, scope, visit),
            console.db() as session,
        ):
            found = await tenant_in_scope(session, scope, tenant_id)
            now = datetime.now(UTC)
            quotas, usage = await tenant_quotas(session, redis, found, now)
            context = visit.context(
                quotas=quotas,
                usage=usage,
                chart=hourly_chart(quotas.history, now),
                labels=LABELS,
                fields=FIELDS,
                saved=SAVED.get(saved or ""),
                may_set_total=scope.principal.is_platform_admin,
            )
        return Template("admin_quota.html.jinja", context=context)

    @post("/{tenant_id:str}/{kind:str}", status_code=303)
    async def set_limits(
        self,
        request: Request[Any, Any, Any],
        tenant_id: FromPath[str],
        kind: FromPath[str],
        console: NamedDependency[ConsoleServices],
    ) -> Response[Any]:
        """Every limit of the scope at once, as the admin API's PUT; back to the page."""
        async with (
            console_call(request, console, LIMITS_FORM, require_admin) as (intake, scope, _),
            console.db() as session,
        ):
            if kind not in EDITABLE_KINDS:
                raise NotFound(f"No limits {kind!r} here; use one of {', '.join(EDITABLE_KINDS)}.")
            canonical = await scope_in_reach(session, scope, kind, tenant_id, writing=True)
            values = checked(limits_from_form(dict(await request.form())))
            await store_limits(session, console.inference, intake, kind, canonical, values)
        return Redirect(f"{QUOTAS_PAGE}/{canonical}?saved={kind}", status_code=303)
