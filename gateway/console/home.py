"""The console's front door: its home page, signing in and out.

GET  /console/            who you are and the pages your roles open
GET  /console/login       sign in (straight to the one identity provider, or a choice)
GET  /console/callback    where the identity provider sends the browser back
POST /console/logout      end the session (CSRF token required), then the provider's too
GET  /console/signed-out  where the provider sends the browser back after signing out

Signing in and out are ``admin`` records (target ``console_session:<digest>``, the same for
both ends of a session; never the session's id), so an auditor can tell who held a console
session when.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from gateway.api.intake import anyone, audited, new_request_id, record_action
from gateway.console.access import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    ConsoleServices,
    console_call,
    cookie,
    current_session,
)
from gateway.console.login import begin, console_issuers, finish, public_base, sign_out_url
from gateway.console.sessions import session_reference
from gateway.settings import ConsoleSettings, OidcSettings

HOME = "/console/"
LOGIN = "/console/login"
CALLBACK = "/console/callback"
LOGOUT = "/console/logout"
SIGNED_OUT = "/console/signed-out"


def _is_https(base: str) -> bool:
    return base.startswith("https://")


class HomeController(Controller):
    path = "/console"

    @get("/")
    async def home(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
    ) -> Template:
        async with console_call(request, console, HOME, anyone) as (_, _, visit):
            return Template("home.html.jinja", context=visit.context())

    @get("/login")
    async def login(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
        oidc_settings: NamedDependency[OidcSettings],
        console_settings: NamedDependency[ConsoleSettings],
        issuer: FromQuery[str | None] = None,
    ) -> Response[Any]:
        """Sign in at the chosen identity provider (the only one, or ``issuer``)."""
        if await current_session(request, console.sessions) is not None:
            return Redirect(HOME, status_code=303)
        issuers = console_issuers(oidc_settings)
        chosen = [i for i in issuers if i.issuer == issuer] if issuer else issuers
        if len(chosen) != 1:
            return Template("login.html.jinja", context={"issuers": issuers})
        async with audited(console.inference, new_request_id("console"), LOGIN):
            base = public_base(str(request.base_url), console_settings)
            url, browser = await begin(console.sessions, console.authenticator, chosen[0], base)
        response = Redirect(url, status_code=303)
        response.set_cookie(
            cookie(
                LOGIN_COOKIE,
                browser,
                is_secure=_is_https(base),
                max_age=console_settings.login_timeout_s,
            )
        )
        return response

    @get("/callback")
    async def callback(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
        oidc_settings: NamedDependency[OidcSettings],
        console_settings: NamedDependency[ConsoleSettings],
    ) -> Response[Any]:
        """Finish the sign-in; a new session (a new id: no fixation) in a fresh cookie."""
        async with audited(console.inference, new_request_id("console"), CALLBACK) as intake:
            base = public_base(str(request.base_url), console_settings)
            signed_in = await finish(
                console.sessions,
                console.authenticator,
                oidc_settings,
                dict(request.query_params),
                request.cookies.get(LOGIN_COOKIE),
            )
            principal = intake.principal = signed_in.principal
            previous = request.cookies.get(SESSION_COOKIE)
            if previous:  # signing in again replaces the session this browser had
                await console.sessions.end(previous)
            session_id, _ = await console.sessions.start(
                principal.user_id, principal.issuer or "", signed_in.id_token
            )
            await record_action(
                console.inference,
                intake,
                target=f"console_session:{session_reference(session_id)}",
                change={"action": "sign_in", "issuer": principal.issuer},
            )
        response = Redirect(HOME, status_code=303)
        # No max-age: the cookie goes with the browser; the server ends the session anyway.
        response.set_cookie(
            cookie(SESSION_COOKIE, session_id, is_secure=_is_https(base), max_age=None)
        )
        response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        return response

    @post("/logout", status_code=200)
    async def logout(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
        oidc_settings: NamedDependency[OidcSettings],
        console_settings: NamedDependency[ConsoleSettings],
    ) -> Response[Any]:
        """End the session here, then send the browser to end it at the identity provider
        (when the provider has a sign-out endpoint), which sends it back to SIGNED_OUT."""
        async with console_call(request, console, LOGOUT, anyone) as (intake, _, visit):
            await record_action(
                console.inference,
                intake,
                target=f"console_session:{session_reference(visit.session_id)}",
                change={"action": "sign_out"},
            )
            await console.sessions.end(visit.session_id)
            base = public_base(str(request.base_url), console_settings)
            session = visit.session
            url = await sign_out_url(
                console.authenticator, oidc_settings, session.issuer, session.id_token, base
            )
        response: Response[Any] = (
            Template("signed_out.html.jinja") if url is None else Redirect(url, status_code=303)
        )
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    @get("/signed-out")
    async def signed_out(self) -> Template:
        """The provider's sign-out is done (or was not offered): nothing here needs a
        session, and nothing is read from the query."""
        return Template("signed_out.html.jinja")
