"""The compliance console under ``/console/``: server-rendered pages (Jinja), their static
files, their error pages and the headers every console answer carries. Nothing is loaded
from elsewhere: styles and scripts are served by the gateway (air-gapped sites)."""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.datastructures import ResponseHeader
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from gateway.console.admin_pages import AdminPagesController
from gateway.console.audit_pages import AuditPagesController
from gateway.console.errors import render_error
from gateway.console.home import HomeController
from gateway.console.integrity_pages import IntegrityPageController
from gateway.console.login import sign_out_origins
from gateway.console.model_access_pages import ModelAccessPagesController
from gateway.console.quota_pages import QuotaPagesController
from gateway.console.subject_pages import SubjectPagesController
from gateway.console.tenant_pages import TenantPagesController
from gateway.console.user_pages import UserPagesController
from gateway.settings import OidcSettings

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the callback's URL holds the sign-in code
    "Cache-Control": "no-store",  # pages show audit records and, once, key secrets
}


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine)


def content_security_policy(sign_out_origins: list[str]) -> str:
    """Nothing loaded from elsewhere; forms post here, and sign-out's redirect may go on
    to the identity providers (a form's redirects are held to ``form-action`` too)."""
    form_action = " ".join(["'self'", *sign_out_origins])
    return (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        f"base-uri 'none'; form-action {form_action}; object-src 'none'"
    )


def console_router(oidc: OidcSettings) -> Router:
    headers = {
        "Content-Security-Policy": content_security_policy(sign_out_origins(oidc)),
        **SECURITY_HEADERS,
    }
    return Router(
        path="/",
        route_handlers=[
            HomeController,
            AuditPagesController,
            IntegrityPageController,
            SubjectPagesController,
            AdminPagesController,
            QuotaPagesController,
            TenantPagesController,
            ModelAccessPagesController,
            UserPagesController,
            create_static_files_router(path="/console/static", directories=[STATIC]),
        ],
        exception_handlers={Exception: render_error},
        response_headers=[ResponseHeader(name=k, value=v) for k, v in headers.items()],
        include_in_schema=False,
    )
