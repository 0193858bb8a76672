"""Fill-in-the-middle prompts: the operator's template, the texts put in as they are."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import WorkerSettings
from workers.engine import EngineInfo, EngineRequestError, TextPrompt
from workers.fim import prompt_text, render

STARCODER = "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"


def test_render_puts_prefix_and_suffix_in_place() -> None:
    assert render(STARCODER, "def f(", "):\n") == "<fim_prefix>def f(<fim_suffix>):\n<fim_middle>"


def test_braces_in_code_are_not_placeholders() -> None:
    """A prefix that contains ``{suffix}`` (say, an f-string) stays as written."""
    code = 'print(f"{suffix}{prefix}")'
    assert render(STARCODER, code, "{x}") == f"<fim_prefix>{code}<fim_suffix>{{x}}<fim_middle>"


def info(template: str) -> EngineInfo:
    return EngineInfo("m", 2048, 1, "sha256:x", fim_template=template)


def test_a_prompt_without_suffix_is_left_alone() -> None:
    assert prompt_text(TextPrompt("Once upon"), info(STARCODER)) == "Once upon"


def test_a_suffix_without_a_template_is_the_callers_400() -> None:
    with pytest.raises(EngineRequestError) as caught:
        prompt_text(TextPrompt("a", suffix="b"), info(""))
    assert caught.value.param == "suffix"
    assert "does not support insert" in caught.value.message


@pytest.mark.parametrize("template", ["{prefix}", "{suffix}", "{prefix}{prefix}{suffix}", "x"])
def test_a_template_needs_each_placeholder_once(template: str) -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(fim_template=template)


def test_a_good_template_is_accepted() -> None:
    assert WorkerSettings(fim_template=STARCODER).fim_template == STARCODER
