"""Tool calls out of generated text, step by step, for the tool choices that need no model
syntax: a named function (decoding follows its parameters' schema, so the text *is* the
arguments) and ``required`` (decoding follows an array of ``{"name", "parameters"}``).

``auto`` needs the model's own syntax: workers/vllm_engine.py adapts vLLM's tool parsers
to the same ``ToolCallExtractor`` port.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.queue.protocol import ToolCallDelta, Tools, new_call_id
from workers.engine import EngineRequestError

TOOL_CALLS = "tool_calls"


@dataclass(frozen=True)
class Extracted:
    """What one engine step yields: text for the client, and tool-call pieces."""

    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()


class ToolCallExtractor(Protocol):
    def feed(self, text: str, token_ids: Sequence[int]) -> Extracted:
        """One engine step's new text and token ids."""
        ...

    def finish(self, finish_reason: str) -> tuple[Extracted, str]:
        """What is left once the engine stopped, and the finish reason to report."""
        ...


@dataclass
class NamedCall:
    """``tool_choice`` names the function: every piece of text is more of its arguments.
    The finish reason stays the engine's, as OpenAI reports a forced call."""

    name: str
    _started: bool = False

    def feed(self, text: str, token_ids: Sequence[int]) -> Extracted:
        if not self._started:
            self._started = True
            return Extracted(tool_calls=(ToolCallDelta(0, new_call_id(), self.name, text),))
        return Extracted(tool_calls=(ToolCallDelta(0, arguments=text),) if text else ())

    def finish(self, finish_reason: str) -> tuple[Extracted, str]:
        if not self._started:  # nothing generated: still a call, with empty arguments
            return self.feed("", ()), finish_reason
        return Extracted(), finish_reason


@dataclass
class RequiredCalls:
    """``tool_choice: "required"``: the text is a JSON array of calls, sent whole at the end
    (one piece per call); text that does not parse (cut off by max_tokens) is sent as text."""

    _parts: list[str] = field(default_factory=list)

    def feed(self, text: str, token_ids: Sequence[int]) -> Extracted:
        self._parts.append(text)
        return Extracted()

    def finish(self, finish_reason: str) -> tuple[Extracted, str]:
        text = "".join(self._parts)
        try:
            calls = json.loads(text)
            deltas = tuple(
                ToolCallDelta(
                    index,
                    new_call_id(),
                    call["name"],
                    json.dumps(call["parameters"], ensure_ascii=False),
                )
                for index, call in enumerate(calls)
            )
        except (ValueError, TypeError, KeyError):
            return Extracted(text=text), finish_reason
        reason = TOOL_CALLS if finish_reason == "stop" else finish_reason
        return Extracted(tool_calls=deltas), reason


def extractor_for(
    tools: Tools | None, model: str, parsed: Callable[[Tools], ToolCallExtractor] | None
) -> ToolCallExtractor | None:
    """How the calls come out of a request's text; None: it is all text. ``parsed`` reads
    the model's own syntax (``auto``); without it, ``auto`` is the caller's 400, as in vLLM."""
    if tools is None or tools.choice == "none":
        return None
    if tools.is_named:
        return NamedCall(tools.choice)
    if tools.choice == "required":
        return RequiredCalls()
    if parsed is None:
        raise EngineRequestError(
            f'tool_choice "auto" needs the tool-call syntax of {model}, and its worker has no '
            "tool-call parser configured (ENCLAVE_WORKER__TOOL_CALL_PARSER). Use tool_choice "
            '"required" or name a function, which work with any model.',
            code="invalid_value",
            param="tool_choice",
        )
    return parsed(tools)
