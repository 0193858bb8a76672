"""The console's CSRF check: only the session's own token passes."""

from __future__ import annotations

import pytest

from gateway.console.csrf import CsrfRefused, check_csrf

TOKEN = "k3Y2oW8vZy1yY0JxS0F6dFVfX3pmR1lXb0VZcW9HdnM"


def test_the_sessions_token_passes() -> None:
    check_csrf(TOKEN, TOKEN)


@pytest.mark.parametrize(
    "submitted",
    [None, "", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "é" + TOKEN[1:]],
)
def test_anything_else_is_refused_with_403(submitted: str | None) -> None:
    with pytest.raises(CsrfRefused) as refused:
        check_csrf(TOKEN, submitted)
    assert refused.value.status == 403
    assert refused.value.code == "csrf_failed"


def test_no_session_token_matches_nothing() -> None:
    with pytest.raises(CsrfRefused):
        check_csrf("", "")
