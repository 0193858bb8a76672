"""``suffix`` (fill in the middle) on Ollama's /api/generate and OpenAI's /v1/completions:
shaped by the worker's FIM template, announced as Ollama's ``insert`` capability and a
``.Suffix`` template (what Continue looks for); a model without a template answers 400."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import ollama
import openai
import pytest
from redis.asyncio import Redis

from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack
from workers.engine import TextPrompt

pytestmark = pytest.mark.integration

STARCODER = "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"
MIDDLE = "return a + b"


@pytest.fixture
def fim_template() -> str:
    return STARCODER


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis, fim_template: str
) -> AsyncIterator[Stack]:
    engine = FakeEngine(reply=MIDDLE, fim_template=fim_template)
    async with open_stack(make_postgres_url(), redis_url, engine) as opened:
        yield opened


async def ollama_client(stack: Stack) -> ollama.AsyncClient:
    headers = {"Authorization": f"Bearer {await stack.key()}"}
    return ollama.AsyncClient(host=str(stack.client.base_url), headers=headers)


def completed_text(stack: Stack) -> str:
    [(_, prompt, _)] = stack.engine.requests
    assert isinstance(prompt, TextPrompt)
    return prompt.text


async def test_ollama_generate_fills_in_the_middle(stack: Stack) -> None:
    client = await ollama_client(stack)
    answer = await client.generate(model="fake-model", prompt="def add(a, b):\n    ", suffix="\n")
    assert answer.response == MIDDLE
    assert completed_text(stack) == "<fim_prefix>def add(a, b):\n    <fim_suffix>\n<fim_middle>"


async def test_openai_completions_take_a_suffix(stack: Stack) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{str(stack.client.base_url).rstrip('/')}/v1",
        api_key=await stack.key(),
        max_retries=0,
    )
    completion = await client.completions.create(
        model="fake-model", prompt="def add(a, b):", suffix="# done", max_tokens=20
    )
    assert completion.choices[0].text == MIDDLE
    assert completed_text(stack) == "<fim_prefix>def add(a, b):<fim_suffix># done<fim_middle>"


async def test_show_announces_insert_as_ollama_and_continue_read_it(stack: Stack) -> None:
    shown = await (await ollama_client(stack)).show("fake-model")
    assert "insert" in (shown.capabilities or [])
    assert ".Suffix" in (shown.template or "")  # Continue: fimSupported


@pytest.mark.parametrize("fim_template", [""])
async def test_without_a_template_a_suffix_is_a_400_in_each_dialect(stack: Stack) -> None:
    key = await stack.key()
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "fake-model", "prompt": "def f(", "suffix": ")", "stream": False}
    ollama_answer = await stack.client.post("/api/generate", json=body, headers=headers)
    assert ollama_answer.status_code == 400
    assert ollama_answer.json() == {
        "error": '"fake-model" does not support insert: no fill-in-the-middle template is '
        "configured for it (ENCLAVE_WORKER__FIM_TEMPLATE)"
    }
    openai_answer = await stack.client.post(
        "/v1/completions", json={**body, "stream": False}, headers=headers
    )
    assert openai_answer.status_code == 400
    assert openai_answer.json()["error"]["param"] == "suffix"
    shown = await (await ollama_client(stack)).show("fake-model")
    assert "insert" not in (shown.capabilities or [])
    assert ".Suffix" not in (shown.template or "")
