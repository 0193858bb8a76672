"""``enclave proxy``: a forwarder on this machine's loopback that adds the user's key.

For clients that cannot send an ``Authorization`` header, such as the ``ollama`` CLI (it
talks to ``OLLAMA_HOST`` without credentials): they call ``http://127.0.0.1:11434`` and
the proxy forwards each request to the gateway with ``Authorization: Bearer <key>``,
streaming the answer back as it comes. It listens on loopback only, so the key never
serves anyone else on the network; the key comes from ``enclave login``'s credentials file
or ``ENCLAVE_API_KEY``, never from the command line (where ``ps`` would show it).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from gateway.login import credentials_path, load_credentials

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

KEY_VARIABLE = "ENCLAVE_API_KEY"
# Hop-by-hop headers (RFC 9110 section 7.6.1), and what the proxy sets itself.
_NOT_FORWARDED = frozenset(
    {
        "authorization",
        "connection",
        "host",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class ProxyError(Exception):
    """The proxy cannot start; the message says what to do."""


def check_loopback(host: str) -> str:
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = host == "localhost"
    if not is_loopback:
        raise ProxyError(
            f"refusing to listen on {host}: the proxy adds your key to every request, so it "
            "listens on this machine's loopback only (127.0.0.1, ::1 or localhost)"
        )
    return host


def find_key(
    gateway: str, environ: Mapping[str, str] = os.environ, path: Path | None = None
) -> str:
    """``ENCLAVE_API_KEY``, else the key ``enclave login`` stored for this gateway."""
    if environ.get(KEY_VARIABLE):
        return environ[KEY_VARIABLE]
    stored = load_credentials(path or credentials_path(environ)).get(gateway.rstrip("/"))
    key = stored.get("key") if isinstance(stored, dict) else None
    if not isinstance(key, str) or not key:
        raise ProxyError(
            f"no key for {gateway}: run `enclave login --gateway {gateway}` or set {KEY_VARIABLE}"
        )
    return key


def _forwarded(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The client's headers for the gateway (httpx sets the body's length itself)."""
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in headers
        if name.decode("latin-1").lower() not in _NOT_FORWARDED | {"content-length"}
    ]


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


class KeyProxy:
    """The ASGI application: every request to the gateway, with the key."""

    def __init__(self, gateway: str, key: str, client: httpx.AsyncClient | None = None) -> None:
        self._gateway = gateway.rstrip("/")
        self._key = key
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        query = scope.get("query_string", b"").decode("latin-1")
        url = self._gateway + scope["path"] + (f"?{query}" if query else "")
        headers = [*_forwarded(scope["headers"]), ("authorization", f"Bearer {self._key}")]
        request = self._client.build_request(
            scope["method"], url, headers=headers, content=await _read_body(receive)
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await self._unreachable(send, exc)
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in response.headers.multi_items()
                        if name.lower() not in _NOT_FORWARDED
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _unreachable(self, send: Send, exc: httpx.HTTPError) -> None:
        body = json.dumps({"error": f"cannot reach {self._gateway}: {type(exc).__name__}"})
        await send(
            {
                "type": "http.response.start",
                "status": 502,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
