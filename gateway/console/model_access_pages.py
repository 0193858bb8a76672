"""The console's model access page: which models a tenant may use, for its tenant_admin to
read and a platform_admin to set, with the admin API's rules and ``admin`` records
(``PUT /admin/v1/tenants/{id}/models``: a tenant_admin may not widen its own access).

GET  /console/admin/tenants/{id}/models   the tenant's access beside the models served now
POST /console/admin/tenants/{id}/models   set it: every model, or the ticked ones (and one
                                          more by name, for a model not served yet)
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from gateway.api.admin.scope import AdminScope, require_admin, tenant_in_scope
from gateway.api.admin.tenants import apply_model_access, tenant_to_change
from gateway.console.access import ConsoleServices, Visit, console_call
from gateway.console.forms import choice, text_field, ticked
from gateway.db.models import Tenant
from gateway.inference import InferenceService

MODELS_PAGE = "/console/admin/tenants/{id}/models"
EVERY_MODEL = "every"
LISTED_MODELS = "listed"


def model_access(form: FormMultiDict) -> list[str] | None:
    """The form as the admin API's ``models``: None for every model (now and later), else
    the ticked models and the one typed in (none ticked: no model at all)."""
    if choice(form, "access", (EVERY_MODEL, LISTED_MODELS)) == EVERY_MODEL:
        return None
    typed = text_field(form, "other_model")
    return [*ticked(form, "models"), *([typed] if typed else [])]


def models_page_url(tenant_id: str) -> str:
    return MODELS_PAGE.replace("{id}", tenant_id)


async def model_access_page(
    inference: InferenceService, scope: AdminScope, tenant: Tenant, visit: Visit
) -> dict[str, Any]:
    """The tenant's access, offered over every model served now and every model granted."""
    served = {worker.model for worker in await inference.queue.live_workers()}
    granted = set(tenant.allowed_models or [])
    return visit.context(
        tenant=tenant,
        served=served,
        models=sorted(served | granted),
        may_change=scope.principal.is_platform_admin,
    )


class ModelAccessPagesController(Controller):
    path = MODELS_PAGE.replace("{id}", "{tenant_id:str}")

    @get("")
    async def show_access(
        self,
        request: Request[Any, Any, Any],
        tenant_id: FromPath[str],
        console: NamedDependency[ConsoleServices],
    ) -> Template:
        async with (
            console_call(request, console, MODELS_PAGE, require_admin) as (_, scope, visit),
            console.db() as session,
        ):
            tenant = await tenant_in_scope(session, scope, tenant_id)
            context = await model_access_page(console.inference, scope, tenant, visit)
        return Template("admin_models.html.jinja", context=context)

    @post("", status_code=303)
    async def set_access(
        self,
        request: Request[Any, Any, Any],
        tenant_id: FromPath[str],
        console: NamedDependency[ConsoleServices],
    ) -> Response[Any]:
        """Set the tenant's model access (platform_admin)."""
        async with (
            console_call(request, console, MODELS_PAGE, require_admin) as (intake, scope, _),
            console.db() as session,
        ):
            tenant = await tenant_to_change(
                session, scope, tenant_id, "change a tenant's model access"
            )
            models = model_access(await request.form())
            await apply_model_access(session, console.inference, intake, tenant, models)
        return Redirect(models_page_url(tenant.id), status_code=303)
