"""CSRF protection of the console: a secret token per session, sent back with every
state-changing request (a hidden form field, or a header for scripts), compared in
constant time. SameSite=Lax on the session cookie is the second wall, not the only one."""

from __future__ import annotations

import hmac

from gateway.errors import PermissionDenied

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRefused(PermissionDenied):
    default_code = "csrf_failed"


def check_csrf(expected: str, submitted: str | None) -> None:
    """Refuse (403) unless ``submitted`` is the session's token."""
    if not submitted or not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise CsrfRefused(
            "This form is missing its security token or carries another session's; "
            "reload the page and try again."
        )
