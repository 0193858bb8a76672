"""``enclave proxy`` for clients that send no key (the ``ollama`` CLI): the official ollama
client, given no headers at all, talks to Enclave through the proxy on loopback, which
adds the key; streams arrive piece by piece; the gateway's own errors pass through."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import ollama
import pytest

from gateway.local_proxy import KeyProxy, ProxyError, check_loopback, find_key
from tests.integration.stack import Stack, serve

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
async def proxy_url(stack: Stack) -> AsyncIterator[str]:
    gateway = str(stack.client.base_url).rstrip("/")
    async with serve(KeyProxy(gateway, await stack.key())) as url:
        yield url


async def test_the_ollama_client_without_a_key_chats_through_the_proxy(
    stack: Stack, proxy_url: str
) -> None:
    client = ollama.AsyncClient(host=proxy_url)  # no Authorization header, like the CLI
    answer = await client.chat(model="fake-model", messages=QUESTION, stream=False)
    assert answer.message.content == "The capital of France is Paris."
    stream = await client.chat(model="fake-model", messages=QUESTION, stream=True)
    pieces = [p async for p in stream]
    assert len(pieces) > 2  # streamed, not buffered into one answer
    assert "".join(p.message.content or "" for p in pieces) == answer.message.content
    assert [m.model for m in (await client.list()).models] == ["fake-model:latest"]


async def test_without_the_proxy_the_same_client_is_refused(stack: Stack) -> None:
    client = ollama.AsyncClient(host=str(stack.client.base_url))
    with pytest.raises(ollama.ResponseError) as caught:
        await client.list()
    assert caught.value.status_code == 401


async def test_the_gateways_errors_pass_through(stack: Stack, proxy_url: str) -> None:
    client = ollama.AsyncClient(host=proxy_url)
    with pytest.raises(ollama.ResponseError) as caught:
        await client.pull("llama3")
    assert caught.value.status_code == 403  # models are managed by operators


async def test_an_unreachable_gateway_is_a_502() -> None:
    async with serve(KeyProxy("http://127.0.0.1:9", "key")) as url:
        client = ollama.AsyncClient(host=url)
        with pytest.raises(ollama.ResponseError) as caught:
            await client.list()
    assert caught.value.status_code == 502


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.org", "::"])
def test_it_listens_on_loopback_only(host: str) -> None:
    with pytest.raises(ProxyError):
        check_loopback(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_is_allowed(host: str) -> None:
    assert check_loopback(host) == host


def test_the_key_comes_from_the_environment_or_enclave_login(tmp_path: Path) -> None:
    stored = tmp_path / "credentials.json"
    stored.write_text(json.dumps({"https://llm.example.org": {"key": "sk-stored"}}))
    gateway = "https://llm.example.org/"
    assert find_key(gateway, {}, stored) == "sk-stored"
    assert find_key(gateway, {"ENCLAVE_API_KEY": "sk-env"}, stored) == "sk-env"
    with pytest.raises(ProxyError):
        find_key("https://other.example.org", {}, stored)


def test_the_command_refuses_a_network_address() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "proxy",
            "--gateway",
            "http://x",
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        env={"ENCLAVE_API_KEY": "sk-test", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "loopback" in done.stderr
