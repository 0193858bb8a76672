"""The console's error pages: the API's error tree (``gateway.errors``) rendered as HTML.

A request without a session is sent to sign in; a refusal shows its status and its
message (written for people already); anything unknown is a 500 naming the request only.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template

from gateway.console.access import SignInRequired
from gateway.errors import EnclaveError

logger = logging.getLogger("enclave.console")
LOGIN_PAGE = "/console/login"
TITLES = {
    400: "Not a valid request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible now",
    503: "Unavailable",
}


def render_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, SignInRequired):
        return Redirect(LOGIN_PAGE, status_code=303)
    if isinstance(exc, EnclaveError):
        status, message = exc.status, exc.message
    elif isinstance(exc, HTTPException) and exc.status_code < 500:
        status, message = exc.status_code, str(exc.detail)
    else:
        logger.error("unhandled error on console page %s", request.url.path, exc_info=exc)
        status, message = 500, "The console had an error; the log of the gateway says more."
    return Template(
        "error.html.jinja",
        context={"status": status, "title": TITLES.get(status, "Error"), "message": message},
        status_code=status,
    )
