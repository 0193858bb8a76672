"""The console in front of the real deployment: the e2e cluster's gateway process and its
vLLM worker on the demo model (tests/e2e/conftest.py), the real OpenID Provider, headless
Chromium. bob, a radiology tenant_admin, creates a service account and its key in the
browser; the key then gets an answer from the model through the official openai SDK, and
the request is in the audit log under a key of Enclave's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.browser import screenshot, sign_in
from tests.e2e.conftest import Cluster
from tests.processes import DEMO_MODEL

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


async def press(page: Any, button: str) -> None:
    async with page.expect_navigation():
        await page.get_by_role("button", name=button).click()


async def test_a_key_made_in_the_console_gets_answers_from_the_model(
    cluster: Cluster, page: Any
) -> None:
    console = cluster.base_url
    await sign_in(page, console, "bob", "real-model")
    await page.goto(f"{console}/console/admin/users")
    await page.fill("#name", "ward-assistant")
    await press(page, "Create service account")
    await page.goto(f"{console}/console/admin/keys")
    await page.select_option("#user_id", label="ward-assistant")
    await page.fill("#name", "ward assistant")
    await press(page, "Create key")
    await screenshot(page, "real-model-key-created")
    key = await page.locator("#new-key").input_value()
    assert key.startswith("enc_")

    client = cluster.client(api_key=key)
    answer = await asyncio.to_thread(
        lambda: client.chat.completions.create(
            model=DEMO_MODEL,
            messages=QUESTION,
            temperature=0,
            max_tokens=12,
        )
    )
    assert "Paris" in (answer.choices[0].message.content or ""), answer
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0

    rows = await asyncio.to_thread(cluster.audit_rows, answer.id)
    assert [(r.event, r.status) for r in rows] == [("accepted", 202), ("outcome", 200)]
    assert rows[0].key_id is not None  # the key's pseudonym, resolved to its id
    assert "<unknown" not in rows[0].key_id
