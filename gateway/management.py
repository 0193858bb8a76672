"""The management listener of a gateway or a worker: ``/healthz``, ``/readyz``, ``/metrics``.

A port of its own (``ENCLAVE_HTTP__MANAGEMENT_PORT``), as Keycloak's management interface:
probes and Prometheus reach it, the ingress does not, and it answers while the API port is
busy or draining. GET and HEAD only; one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

logger = logging.getLogger("enclave.management")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_MAX_HEAD_BYTES = 8192
_READ_TIMEOUT_S = 10.0

Checks = Callable[[], Awaitable[dict[str, str]]]
"""Named checks, each "ok" or why not; ready when every one is "ok"."""


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def verdict(checks: dict[str, str]) -> tuple[int, dict[str, str]]:
    """The readiness answer: 200 when every check is "ok", else 503; the checks and a status."""
    is_ready = all(value == "ok" for value in checks.values())
    return (200 if is_ready else 503), checks | {"status": "ready" if is_ready else "not ready"}


def _json(status: int, content: dict[str, str]) -> Reply:
    return Reply(status, "application/json", json.dumps(content).encode())


class ManagementServer:
    """Serves health and metrics on ``host:port`` (0: any free port) until stopped."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        readiness: Checks,
        metrics: Callable[[], Awaitable[bytes]],
    ) -> None:
        self._host = host
        self._port = port
        self._readiness = readiness
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=_MAX_HEAD_BYTES
        )
        logger.info("management listener on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def reply(self, method: str, path: str) -> Reply:
        """The answer to one request."""
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": "only GET and HEAD"})
        path = path.split("?", 1)[0]
        if path == "/healthz":
            return _json(200, {"status": "ok"})
        if path == "/readyz":
            return _json(*verdict(await self._readiness()))
        if path == "/metrics":
            return Reply(200, PROMETHEUS_TEXT, await self._metrics())
        return _json(404, {"error": f"unknown path {path}"})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head[: head.index(b"\r\n")].decode("latin-1").split(" ", 2)
            reply = await self.reply(method, path)
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            reply = Reply(400, "text/plain", b"bad request\n")
            method = "GET"
        except Exception:
            logger.exception("management request failed")
            reply = _json(503, {"status": "error"})
            method = "GET"
        header = (
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Bad Request')}\r\n"
            f"Content-Type: {reply.content_type}\r\n"
            f"Content-Length: {len(reply.body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(ConnectionError):
            writer.write(header if method == "HEAD" else header + reply.body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
