"""What comes out of vLLM, in the queue's terms: tool calls read by vLLM's own parsers of a
model's syntax (``tool_choice: "auto"``), log probabilities, and the scheduler's load.

With workers/vllm_engine.py, the only module that imports vllm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.outputs import CompletionOutput
from vllm.tool_parsers.abstract_tool_parser import ToolParser
from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.stats import SchedulerStats

from gateway.queue.protocol import TokenLogprob, ToolCallDelta, TopLogprob
from workers.engine import EngineLoad
from workers.tool_calls import TOOL_CALLS, Extracted


class LoadRecorder(StatLoggerBase):
    """A vLLM stat logger that keeps the scheduler's latest figures (``EngineLoad``) for the
    worker's metrics. vLLM calls ``record`` from the output handler, every engine step."""

    def __init__(self, vllm_config: Any = None, engine_index: int = 0) -> None:
        self.latest = EngineLoad()

    def record(
        self,
        scheduler_stats: SchedulerStats | None,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        if scheduler_stats is not None:
            self.latest = EngineLoad(
                running=scheduler_stats.num_running_reqs,
                waiting=scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs,
                kv_cache_usage=scheduler_stats.kv_cache_usage,
            )

    def log_engine_initialized(self) -> None:
        pass


class ParsedToolCalls:
    """``tool_choice: "auto"``: the model's own syntax, read by one of vLLM's tool parsers.

    Streams what the parser finds step by step; at the end, reconciles with the parser's
    reading of the whole text, so nothing it held back (a partial tag) is lost.
    """

    def __init__(
        self, parser: ToolParser, request: ChatCompletionRequest, *, keeps_special_tokens: bool
    ) -> None:
        self.keeps_special_tokens = keeps_special_tokens
        self._parser = parser
        self._request = request
        self._text = ""
        self._token_ids: list[int] = []
        self._sent_text = ""
        self._sent_args: dict[int, str] = {}

    def feed(self, text: str, token_ids: Sequence[int]) -> Extracted:
        previous_text, previous_ids = self._text, list(self._token_ids)
        self._text += text
        self._token_ids.extend(token_ids)
        delta = self._parser.extract_tool_calls_streaming(
            previous_text,
            self._text,
            text,
            previous_ids,
            self._token_ids,
            token_ids,
            self._request,
        )
        if delta is None:
            return Extracted()
        calls = []
        for call in delta.tool_calls:
            function = call.function
            name = (function.name if function else None) or ""
            arguments = (function.arguments if function else None) or ""
            self._sent_args[call.index] = self._sent_args.get(call.index, "") + arguments
            calls.append(ToolCallDelta(call.index, call.id or "", name, arguments))
        self._sent_text += delta.content or ""
        return Extracted(delta.content or "", tuple(calls))

    def finish(self, finish_reason: str) -> tuple[Extracted, str]:
        final = self._parser.extract_tool_calls(self._text, self._request)
        if not final.tools_called:
            rest = (
                self._text[len(self._sent_text) :] if self._text.startswith(self._sent_text) else ""
            )
            return Extracted(text=rest), finish_reason
        calls = []
        for index, call in enumerate(final.tool_calls):
            sent = self._sent_args.get(index)
            arguments = call.function.arguments
            if sent is None:
                calls.append(ToolCallDelta(index, call.id, call.function.name, arguments))
            elif arguments.startswith(sent) and len(arguments) > len(sent):
                calls.append(ToolCallDelta(index, arguments=arguments[len(sent) :]))
        reason = TOOL_CALLS if finish_reason == "stop" else finish_reason
        return Extracted(tool_calls=tuple(calls)), reason


def token_logprobs(
    completion: CompletionOutput, top: int | None, hidden: frozenset[int] = frozenset()
) -> tuple[TokenLogprob, ...]:
    """The sampled tokens' log probabilities and the ``top`` likeliest alternatives', from
    vLLM's per-position maps (sampled token plus the top ranks). Tokens in ``hidden`` (the
    special tokens the text leaves out, such as the end of the turn) are left out too."""
    if top is None or not completion.logprobs:
        return ()
    entries = []
    for token_id, position in zip(completion.token_ids, completion.logprobs, strict=False):
        if position is None or token_id not in position or token_id in hidden:
            continue
        sampled = position[token_id]
        ranked = sorted(
            (lp for lp in position.values() if lp.rank is not None and lp.rank <= top),
            key=lambda lp: lp.rank or 0,
        )
        entries.append(
            TokenLogprob(
                sampled.decoded_token or "",
                max(sampled.logprob, -9999.0),  # OpenAI's floor for -inf
                tuple(
                    TopLogprob(lp.decoded_token or "", max(lp.logprob, -9999.0)) for lp in ranked
                ),
            )
        )
    return tuple(entries)
