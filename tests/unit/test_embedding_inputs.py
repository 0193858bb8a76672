"""Pure parts of embeddings: the shapes of ``input``, vectors as clients read them, and
fitting inputs to a model's context (no I/O)."""

from __future__ import annotations

import base64
import struct

import pytest

from gateway.api.embedding_inputs import MAX_INPUTS, ollama_inputs, openai_inputs
from gateway.api.vectors import base64_text, floats
from gateway.errors import InvalidRequest
from gateway.inference import check_task
from gateway.queue.protocol import WorkerInfo, decode_worker_info
from workers.embedding_jobs import check_token_ids, fit_embedding_input
from workers.engine import EngineRequestError


@pytest.mark.parametrize(
    ("value", "inputs"),
    [
        ("hello", ("hello",)),
        (["a", "b"], ("a", "b")),
        ([1, 2, 3], ((1, 2, 3),)),
        ([[1, 2], [3]], ((1, 2), (3,))),
        (["x"] * MAX_INPUTS, ("x",) * MAX_INPUTS),
    ],
)
def test_openai_takes_its_four_input_shapes(value: object, inputs: tuple[object, ...]) -> None:
    assert openai_inputs(value) == inputs


@pytest.mark.parametrize(
    "value",
    ["", [], [""], [[]], [1, "a"], [True], [[1], ["a"]], [-1], None, 3, {"a": 1}, ["x"] * 2049],
)
def test_openai_refuses_anything_else_naming_input(value: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        openai_inputs(value)
    assert refused.value.param == "input"


def test_ollama_takes_a_string_or_strings_and_empty_means_load() -> None:
    assert ollama_inputs("a") == ("a",)
    assert ollama_inputs(["a", ""]) == ("a", "")
    assert ollama_inputs("") == ollama_inputs([]) == ollama_inputs(None) == ()
    for value in (5, [1], ["a", None], {"a": 1}):
        with pytest.raises(InvalidRequest, match="invalid input type"):
            ollama_inputs(value)


def test_vectors_are_little_endian_float32_in_base64_and_exact_floats() -> None:
    values = [0.5, -1.25, 3.0e-8, 1.0]
    raw = struct.pack("<4f", *values)
    assert base64_text(raw) == base64.b64encode(raw).decode()
    assert floats(raw) == list(struct.unpack("<4f", raw))
    assert floats(raw)[:2] == [0.5, -1.25]


def test_an_input_over_the_context_is_cut_or_refused() -> None:
    assert fit_embedding_input([1, 2, 3], 0, 3, truncate=False) == [1, 2, 3]
    assert fit_embedding_input([1, 2, 3, 4], 0, 3, truncate=True) == [1, 2, 3]
    with pytest.raises(EngineRequestError) as refused:
        fit_embedding_input([1, 2, 3, 4], 2, 3, truncate=False)
    assert refused.value.code == "context_length_exceeded"
    assert "4 tokens in input 2" in refused.value.message


def test_token_ids_must_be_in_the_vocabulary() -> None:
    check_token_ids([0, 9], 0, 10)
    with pytest.raises(EngineRequestError, match="names token 10"):
        check_token_ids([0, 10], 1, 10)


def worker(task: str) -> WorkerInfo:
    return WorkerInfo("w", "m", 512, "sha256:x", 4, 0, 1, 0.0, task=task)


def test_each_kind_of_model_serves_its_own_requests_only() -> None:
    check_task(worker("embed"), "m", "embed")
    check_task(worker("generate"), "m", "chat")
    with pytest.raises(InvalidRequest, match="is an embedding model"):
        check_task(worker("embed"), "m", "completion")
    with pytest.raises(InvalidRequest, match="does not support embeddings"):
        check_task(worker("generate"), "m", "embed")


def test_a_heartbeat_from_an_older_worker_still_decodes_as_generative() -> None:
    old = (
        b'{"worker_id":"w","model":"m","max_context":512,"weights_digest":"d",'
        b'"capacity":4,"running":0,"pid":1,"heartbeat_at":1.0}'
    )
    assert (decode_worker_info(old).task, decode_worker_info(old).embedding_size) == (
        "generate",
        0,
    )
