"""The request sequence Continue sends to an Ollama server (see
tests/integration/test_continue_replay.py for what it reads and why), against the real
chat and embedding workers, with Continue's own options: num_predict 4096 on a model of
2048 tokens of context, keep_alive 1800, a streamed chat split on newlines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Cluster
from tests.processes import DEMO_MODEL, EMBEDDING_MODEL

pytestmark = pytest.mark.e2e

PARAMETER_LINE = re.compile(r'^(\S+)\s+((?:".*")|\S+)$')  # Continue's own pattern


def test_continue_session_on_the_real_workers(cluster: Cluster, embedding_model: Path) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {cluster.api_key}"}
    with httpx.Client(base_url=cluster.base_url, headers=headers, timeout=120) as http:
        show = http.post("/api/show", content=json.dumps({"name": DEMO_MODEL})).json()
        # The demo model's generation config sets no sampling defaults: Ollama then leaves
        # ``parameters`` out, and an empty string would make Continue's line parser throw.
        assert show.get("parameters") != ""
        lines = show["parameters"].split("\n") if "parameters" in show else []
        assert all(PARAMETER_LINE.match(line) for line in lines)
        context = [v for k, v in show["model_info"].items() if k.endswith(".context_length")]
        assert context == [2048]
        assert ".Suffix" not in show["template"]  # no fill-in-the-middle on this model
        assert "completion" in show["capabilities"]
        assert "tools" not in show["capabilities"]  # no agent tools offered: no parser

        names = {m["name"] for m in http.get("/api/tags").json()["models"]}
        assert {f"{DEMO_MODEL}:latest", f"{EMBEDDING_MODEL}:latest"} <= names

        body = {
            "model": DEMO_MODEL,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "options": {"temperature": 0, "num_predict": 4096, "num_ctx": 2048},
            "keep_alive": 1800,
            "stream": True,
        }
        parts, buffer = [], ""
        with http.stream("POST", "/api/chat", content=json.dumps(body)) as response:
            assert response.status_code == 200
            for chunk in response.iter_text():
                buffer += chunk
                *complete, buffer = buffer.split("\n")
                parts.extend(json.loads(line) for line in complete if line.strip())
        assert all("error" not in part for part in parts)
        assert "Paris" in "".join(part["message"]["content"] for part in parts)
        assert parts[-1]["done"] is True
        assert parts[-1]["done_reason"] == "stop"

        chunks = ["def add(a, b):", "    return a + b"]
        embedded = http.post(
            "/api/embed", content=json.dumps({"model": EMBEDDING_MODEL, "input": chunks})
        )
        assert embedded.status_code == 200
        vectors = embedded.json()["embeddings"]
        assert [len(v) for v in vectors] == [384, 384]
