"""schemathesis against the gateway's own OpenAPI document: every operation, requests that fit
the schema and requests that do not, with a valid key and without. No answer may be a 5xx,
and every 4xx outside Ollama's API carries OpenAI's error envelope.

The real app runs on real PostgreSQL and Redis (with a worker on the fake engine, which
answers at once) in a thread of its own, so schemathesis's synchronous client calls it over
HTTP as any client would.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import create_database, drop_database
from tests.fakes.engine import FakeEngine
from tests.integration.stack import open_stack

pytestmark = pytest.mark.integration

MODEL = "fake-model"
EXAMPLES_PER_OPERATION = {GenerationMode.POSITIVE: 24, GenerationMode.NEGATIVE: 16}
"""At most, per operation, mode and caller (with a key and without); fewer where the schema
allows fewer distinct requests."""
OLLAMA_PREFIX = "/api/"


@dataclass
class Served:
    base_url: str
    key: str


@dataclass
class Findings:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def served(postgres_url: str, redis_url: str) -> Iterator[Served]:
    """The app on a real HTTP server, run by an event loop in another thread."""
    database_url = create_database(postgres_url, "test")
    stop = threading.Event()
    started = threading.Event()
    result: dict[str, Any] = {}

    async def run() -> None:
        async with open_stack(database_url, redis_url, FakeEngine()) as stack:
            admin = await stack.key(tenant="fuzz", user="root", roles=frozenset({"platform_admin"}))
            result["served"] = Served(str(stack.client.base_url).rstrip("/"), admin)
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)  # the thread's loop idles until the tests end

    def thread_main() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # reported to the waiting test
            result["error"] = exc
            started.set()

    thread = threading.Thread(target=thread_main, name="fuzzed-gateway", daemon=True)
    thread.start()
    started.wait(120)
    if "error" in result:
        raise result["error"]
    try:
        yield result["served"]
    finally:
        stop.set()
        thread.join(60)
        drop_database(postgres_url, database_url)


def envelope_problem(path: str, status: int, body: Any) -> str | None:
    """Why a response breaks the rules, or None."""
    if status >= 500:
        return f"server error {status}"
    if status < 400 or path.startswith(OLLAMA_PREFIX):
        return None  # Ollama's API answers errors in Ollama's own shape, {"error": "..."}
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"{status} without OpenAI's error envelope: {str(body)[:200]}"
    if not isinstance(error["message"], str) or not error["message"]:
        return f"{status} with an empty message"
    return None


def fuzz(
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    base_url: str,
    findings: Findings,
) -> None:
    """Send ``EXAMPLES_PER_OPERATION[mode]`` generated requests for one operation."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION[mode],
        deadline=None,
        database=None,
        derandomize=True,  # the same requests in every run
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), served_model=st.booleans())
    def call(case: Any, served_model: bool) -> None:
        if served_model and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = MODEL  # past model lookup, into the sampling and message checks
        # Our caller's credentials, not a bearer token generated from the security scheme.
        case.headers = {
            **{k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"},
            **headers,
        }
        response = case.call(base_url=base_url, timeout=30)
        findings.requests += 1
        findings.statuses[response.status_code] += 1
        try:
            body = response.json()
        except ValueError:
            body = response.text
        problem = envelope_problem(case.formatted_path, response.status_code, body)
        if problem:
            findings.failures.append(f"{case.method} {case.formatted_path} ({mode}): {problem}")

    try:
        call()
    except Unsatisfiable:  # nothing to negate in an operation without parameters or body
        assert mode == GenerationMode.NEGATIVE


def test_no_generated_request_gets_a_5xx_and_every_4xx_has_the_envelope(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.base_url}/schema/openapi.json")
    findings = Findings()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:
        for mode in EXAMPLES_PER_OPERATION:
            for headers in ({"Authorization": f"Bearer {served.key}"}, {}):
                fuzz(operation, mode, headers, served.base_url, findings)
    print(f"{findings.requests} requests; statuses {sorted(findings.statuses.items())}")
    assert findings.requests >= 2000
    assert findings.failures == []
