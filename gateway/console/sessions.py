"""Console sessions and sign-ins in progress, kept in Redis; the browser holds only an id.

A session cookie carries 32 random bytes; Redis keeps what they stand for (the user, the
issuer, the session's CSRF token, when it began) under the SHA-256 of the id, so a look at
Redis does not yield a cookie to replay. A session ends when unused for ``session_idle_s``,
``session_max_s`` after sign-in, or at logout. A sign-in in progress is kept under its
``state`` until the identity provider sends the browser back, and taken at most once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.settings import ConsoleSettings

KEY_PREFIX = "enclave:console"
TOKEN_BYTES = 32


def new_token() -> str:
    """A random, URL-safe secret: session ids, CSRF tokens, states, PKCE verifiers."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# Every Redis key of the console is built here, under one prefix.


def session_key(session_id: str) -> str:
    return f"{KEY_PREFIX}:session:{_digest(session_id)}"


def login_key(state: str) -> str:
    return f"{KEY_PREFIX}:login:{_digest(state)}"


@dataclass(frozen=True)
class ConsoleSession:
    user_id: str
    issuer: str
    csrf_token: str
    started_at: float
    """Unix seconds of the sign-in."""
    id_token: str = ""
    """The provider's ID token of the sign-in, if it sent one: the hint its sign-out
    endpoint takes to end the same session there."""


@dataclass(frozen=True)
class PendingLogin:
    """A sign-in sent to the identity provider, waiting for the browser to come back."""

    issuer: str
    code_verifier: str
    browser: str
    """The value of the sign-in cookie set in the browser that began it."""
    redirect_uri: str


def session_reference(session_id: str) -> str:
    """What audit records name a session by: its key's digest, shortened; never the id."""
    return _digest(session_id)[:16]


def _decode(raw: bytes | str | None, kind: type[Any]) -> Any:
    if raw is None:
        return None
    try:
        return kind(**json.loads(raw))
    except (ValueError, TypeError):
        return None  # not ours, or from an older layout: as if absent


class SessionStore:
    def __init__(
        self, redis: Redis, settings: ConsoleSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._clock = clock

    async def start(
        self, user_id: str, issuer: str, id_token: str = ""
    ) -> tuple[str, ConsoleSession]:
        """A new session (a new id at every sign-in: no fixation) and its id for the cookie."""
        session_id = new_token()
        session = ConsoleSession(user_id, issuer, new_token(), self._clock(), id_token)
        await self._redis.set(
            session_key(session_id),
            json.dumps(asdict(session)),
            ex=self._settings.session_idle_s,
        )
        return session_id, session

    async def find(self, session_id: str) -> ConsoleSession | None:
        """The live session of this id, its idle time reset; None if unknown or over."""
        key = session_key(session_id)
        session: ConsoleSession | None = _decode(await self._redis.get(key), ConsoleSession)
        if session is None:
            return None
        if self._clock() - session.started_at >= self._settings.session_max_s:
            await self._redis.delete(key)
            return None
        await self._redis.expire(key, self._settings.session_idle_s)
        return session

    async def end(self, session_id: str) -> None:
        await self._redis.delete(session_key(session_id))

    async def begin_login(self, pending: PendingLogin) -> str:
        """Keep a sign-in in progress; its ``state`` for the authorization request."""
        state = new_token()
        await self._redis.set(
            login_key(state), json.dumps(asdict(pending)), ex=self._settings.login_timeout_s
        )
        return state

    async def take_login(self, state: str) -> PendingLogin | None:
        """The sign-in begun with ``state``, removed so it cannot be finished twice."""
        pending: PendingLogin | None = _decode(
            await self._redis.getdel(login_key(state)), PendingLogin
        )
        return pending
