"""The tool-call extractors that need no model syntax, on scripted engine steps."""

from __future__ import annotations

import json

import pytest

from gateway.queue.protocol import Tools
from workers.engine import EngineRequestError
from workers.tool_calls import NamedCall, RequiredCalls, extractor_for

CALLS = [{"name": "f", "parameters": {"x": 1}}, {"name": "g", "parameters": {}}]


def test_required_sends_each_call_whole_with_its_own_id() -> None:
    calls = RequiredCalls()
    text = json.dumps(CALLS)
    assert calls.feed(text[:10], [1]).tool_calls == ()  # nothing before the array is whole
    calls.feed(text[10:], [2])
    rest, reason = calls.finish("stop")
    assert reason == "tool_calls"
    assert [(c.index, c.name, json.loads(c.arguments)) for c in rest.tool_calls] == [
        (0, "f", {"x": 1}),
        (1, "g", {}),
    ]
    ids = [c.id for c in rest.tool_calls]
    assert len(set(ids)) == 2
    assert all(i.startswith("call_") for i in ids)


def test_required_cut_off_by_max_tokens_is_sent_as_text() -> None:
    calls = RequiredCalls()
    calls.feed('[{"name": "f", "param', [1])
    rest, reason = calls.finish("length")
    assert (rest.text, rest.tool_calls, reason) == ('[{"name": "f", "param', (), "length")


def test_a_named_call_opens_with_id_and_name_then_streams_arguments() -> None:
    calls = NamedCall("f")
    first = calls.feed('{"x"', [1]).tool_calls
    second = calls.feed(": 1}", [2]).tool_calls
    rest, reason = calls.finish("stop")
    assert [(c.name, c.arguments) for c in first] == [("f", '{"x"')]
    assert first[0].id.startswith("call_")
    assert [(c.id, c.name, c.arguments) for c in second] == [("", "", ": 1}")]
    assert (rest.tool_calls, reason) == ((), "stop")


def test_a_named_call_with_no_output_is_still_a_call() -> None:
    rest, _ = NamedCall("f").finish("length")
    assert [(c.name, c.arguments) for c in rest.tool_calls] == [("f", "")]


@pytest.mark.parametrize(
    ("tools", "kind"),
    [
        (None, type(None)),
        (Tools("[]", "none"), type(None)),
        (Tools("[]", "required"), RequiredCalls),
        (Tools("[]", "required", is_named=True), NamedCall),  # a function named "required"
    ],
)
def test_the_extractor_follows_the_choice(tools: Tools | None, kind: type) -> None:
    assert isinstance(extractor_for(tools, "m", None), kind)


def test_auto_without_a_parser_is_the_callers_error() -> None:
    with pytest.raises(EngineRequestError) as caught:
        extractor_for(Tools("[]", "auto"), "m", None)
    assert caught.value.param == "tool_choice"
