"""The management listener over real sockets: probes, metrics, and what it refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.management import PROMETHEUS_TEXT, ManagementServer


class Checks:
    def __init__(self) -> None:
        self.state = {"database": "ok", "redis": "ok"}

    async def __call__(self) -> dict[str, str]:
        return dict(self.state)


@pytest.fixture
def checks() -> Checks:
    return Checks()


@pytest.fixture
async def base_url(checks: Checks) -> AsyncIterator[str]:
    async def metrics() -> bytes:
        return b"# TYPE enclave_up gauge\nenclave_up 1.0\n"

    server = ManagementServer("127.0.0.1", 0, readiness=checks, metrics=metrics)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def test_readyz_follows_the_checks_and_healthz_does_not(
    base_url: str, checks: Checks
) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        ready = await client.get("/readyz")
        checks.state["redis"] = "unreachable"
        not_ready = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert (ready.status_code, ready.json()) == (
        200,
        {"database": "ok", "redis": "ok", "status": "ready"},
    )
    assert (not_ready.status_code, not_ready.json()["status"]) == (503, "not ready")
    assert not_ready.json()["redis"] == "unreachable"
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})


async def test_metrics_is_prometheus_text_and_head_sends_no_body(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        metrics = await client.get("/metrics")
        head = await client.head("/metrics")
    assert metrics.headers["content-type"] == PROMETHEUS_TEXT
    assert metrics.text == "# TYPE enclave_up gauge\nenclave_up 1.0\n"
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(metrics.content))


async def test_unknown_paths_and_other_methods_are_refused(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        unknown = await client.get("/v1/models")
        post = await client.post("/readyz", json={})
    assert unknown.status_code == 404
    assert post.status_code == 405


async def test_a_malformed_request_gets_400_and_the_listener_keeps_serving(
    base_url: str,
) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NONSENSE\r\n\r\n")
    await writer.drain()
    reply = await reader.read()
    writer.close()
    assert reply.startswith(b"HTTP/1.1 400 ")
    async with httpx.AsyncClient(base_url=base_url) as client:
        assert (await client.get("/healthz")).status_code == 200
