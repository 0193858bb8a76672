"""Who is at the console: the session cookie → the signed-in user as they are now → what
the page requires of them, with the CSRF token checked on every state-changing request.

A request without a live session is sent to sign in (a GET) or refused (anything else).
Refusals past that point are audited exactly as the API's are (``gateway.api.intake``),
and the same ``require`` functions as the API's decide who may see what.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from litestar import Request
from litestar.datastructures import Cookie
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.api.admin.scope import ADMIN_ROLES
from gateway.api.intake import Intake, audited, new_request_id
from gateway.auth.authenticator import Authenticator
from gateway.auth.principal import Principal
from gateway.console.csrf import (
    CSRF_FIELD,
    CSRF_HEADER,
    SAFE_METHODS,
    CsrfRefused,
    check_csrf,
)
from gateway.console.sessions import ConsoleSession, SessionStore
from gateway.inference import InferenceService

SESSION_COOKIE = "enclave_console"
LOGIN_COOKIE = "enclave_console_login"
COOKIE_PATH = "/console"
S = TypeVar("S")


class SignInRequired(Exception):
    """No live console session: the browser is sent to sign in."""


@dataclass(frozen=True)
class ConsoleServices:
    """What every console page works with, as one dependency (``console``)."""

    inference: InferenceService
    authenticator: Authenticator
    sessions: SessionStore
    """Console sign-in sessions, in Redis."""
    db: async_sessionmaker[AsyncSession]
    """Sessions of the main database."""


@dataclass(frozen=True)
class Visit:
    """A signed-in person's request: who they are, their session, what pages they may see."""

    principal: Principal
    session: ConsoleSession
    session_id: str

    @property
    def may_audit(self) -> bool:
        """The audit pages: an auditor (its tenant) or a platform_admin (every tenant)."""
        return "auditor" in self.principal.roles or self.principal.is_platform_admin

    @property
    def may_administer(self) -> bool:
        return bool(self.principal.roles & ADMIN_ROLES)

    def context(self, **page: Any) -> dict[str, Any]:
        """What every page template gets: the person, the navigation, the CSRF token."""
        return {"visit": self, "csrf": self.session.csrf_token, **page}


def cookie(name: str, value: str, *, is_secure: bool, max_age: int | None) -> Cookie:
    """A console cookie: HttpOnly, SameSite=Lax, Secure over https, for /console only."""
    return Cookie(
        key=name,
        value=value,
        path=COOKIE_PATH,
        max_age=max_age,
        secure=is_secure,
        httponly=True,
        samesite="lax",
    )


async def submitted_csrf(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        return None
    value = (await request.form()).get(CSRF_FIELD)
    return value if isinstance(value, str) else None


async def current_session(
    request: Request[Any, Any, Any], store: SessionStore
) -> tuple[str, ConsoleSession] | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    session = await store.find(session_id) if session_id else None
    return (session_id, session) if session_id and session else None


@contextlib.asynccontextmanager
async def console_call(
    request: Request[Any, Any, Any],
    console: ConsoleServices,
    endpoint: str,
    require: Callable[[Principal], S],
) -> AsyncIterator[tuple[Intake, S, Visit]]:
    """The signed-in person, checked by ``require`` (the API's own role checks); every
    refusal raised inside the block is audited."""
    inference, authenticator = console.inference, console.authenticator
    found = await current_session(request, console.sessions)
    is_safe = request.method in SAFE_METHODS
    if found is None and is_safe:
        raise SignInRequired
    async with audited(inference, new_request_id("console"), endpoint) as intake:
        if found is None:  # a change without a session: refused like a forged one
            raise CsrfRefused("Your console session has ended; sign in again.")
        session_id, session = found
        principal = await authenticator.signed_in(session.user_id)
        intake.principal = principal
        if not is_safe:
            check_csrf(session.csrf_token, await submitted_csrf(request))
        yield intake, require(principal), Visit(principal, session, session_id)
