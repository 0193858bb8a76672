"""FakeEngine: an InferenceEngine for unit tests of the consumer, no model, no vllm.

It behaves like VllmEngine where the consumer can tell: the context check happens before the
first output, each step yields the new text of ``tokens_per_step`` tokens with a running
completion count, the last output carries "stop" or "length" ("abort" after ``abort()``), and
closing or cancelling the stream removes the request from ``num_unfinished()``.
A token here is one word with its leading whitespace.
"""

from __future__ import annotations

import array
import asyncio
import json
import math
import re
import sys
import zlib
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from itertools import cycle, islice

from gateway.queue.protocol import (
    EmbedInputs,
    SamplingOptions,
    TokenLogprob,
    ToolCallDelta,
    Tools,
    TopLogprob,
    new_call_id,
)
from workers.embedding_jobs import (
    NOT_AN_EMBEDDING_MODEL,
    check_token_ids,
    fit_embedding_input,
)
from workers.engine import (
    ChatPrompt,
    EngineInfo,
    EngineLoad,
    EngineOutput,
    EngineRequestError,
    Prompt,
    TextPrompt,
)
from workers.fim import prompt_text
from workers.tool_calls import (
    TOOL_CALLS,
    Extracted,
    ToolCallExtractor,
    extractor_for,
)

_TOKEN = re.compile(r"\s*\S+")
CHAT_TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"


def split_tokens(text: str) -> list[str]:
    """The fake's tokenizer: words with their leading whitespace, so "".join() restores text."""
    return _TOKEN.findall(text)


def count_prompt_tokens(prompt: Prompt) -> int:
    if isinstance(prompt, ChatPrompt):
        return sum(len(split_tokens(m.content)) + 1 for m in prompt.messages)  # +1: role
    return len(split_tokens(prompt.text))


_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


@dataclass
class FakeToolSyntax:
    """The fake model's own tool-call syntax, Hermes' ``<tool_call>{"name", "arguments"}
    </tool_call>``, read once the text is complete (what ``auto`` parses)."""

    _parts: list[str] = field(default_factory=list)

    def feed(self, text: str, token_ids: Sequence[int]) -> Extracted:
        self._parts.append(text)
        return Extracted()

    def finish(self, finish_reason: str) -> tuple[Extracted, str]:
        text = "".join(self._parts)
        calls = [json.loads(body) for body in _TOOL_CALL.findall(text)]
        if not calls:
            return Extracted(text=text), finish_reason
        deltas = tuple(
            ToolCallDelta(i, new_call_id(), c["name"], json.dumps(c["arguments"]))
            for i, c in enumerate(calls)
        )
        content = text[: text.index("<tool_call>")]
        return Extracted(content, deltas), TOOL_CALLS if finish_reason == "stop" else finish_reason


def fake_logprobs(tokens: list[str], top: int | None) -> tuple[TokenLogprob, ...]:
    """The fake model is sure of its words: log probability -0.25 for each; the alternatives
    are the word itself, then ``<word>#1`` at -2.0, ``<word>#2`` at -3.0, ..."""
    if top is None:
        return ()
    return tuple(
        TokenLogprob(
            t,
            -0.25,
            (TopLogprob(t, -0.25), *(TopLogprob(f"{t}#{i}", -1.0 - i) for i in range(1, top)))[
                :top
            ],
        )
        for t in tokens
    )


def fake_tool_syntax(tools: Tools) -> ToolCallExtractor:
    return FakeToolSyntax()


CLS, SEP, VOCAB_SIZE = 101, 102, 30522


def word_id(token: str) -> int:
    """The fake's id of a word: stable across runs, inside the vocabulary."""
    return 1000 + zlib.crc32(token.strip().lower().encode()) % (VOCAB_SIZE - 1000)


def fake_vector(token_ids: Sequence[int], size: int) -> bytes:
    """Each token adds one to a dimension chosen by its id; normalized, float32 LE."""
    values = [0.0] * size
    for token in token_ids:
        if token not in (CLS, SEP):
            values[token % size] += 1.0
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    floats = array.array("f", (v / norm for v in values))
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tobytes()


class FakeEngine:
    """Replies with ``reply`` (a string, or a function of the prompt) in steps; reads tool
    calls out of it like VllmEngine (``has_tool_parser``: the ``<tool_call>`` syntax)."""

    def __init__(
        self,
        *,
        reply: str | Callable[[Prompt], str] = "The capital of France is Paris.",
        tokens_per_step: int = 1,
        step_delay_s: float = 0.0,
        max_context: int = 2048,
        capacity: int = 4,
        model: str = "fake-model",
        weights_digest: str = "sha256:" + "0" * 64,
        has_tool_parser: bool = False,
        fim_template: str = "",
        task: str = "generate",
        embedding_size: int = 8,
        is_matryoshka: bool = False,
    ) -> None:
        self._reply = reply
        self._tokens_per_step = tokens_per_step
        self.step_delay_s = step_delay_s
        self._info = EngineInfo(
            model=model,
            max_context=max_context,
            capacity=capacity,
            weights_digest=weights_digest,
            architecture="fake",
            chat_template=CHAT_TEMPLATE,
            generation_defaults={"temperature": 0.6},
            tool_parser="hermes" if has_tool_parser else "",
            fim_template=fim_template,
            task=task,
            embedding_size=embedding_size if task == "embed" else 0,
        )
        self._is_matryoshka = is_matryoshka
        self.embedded: list[tuple[str, list[list[int]], int | None]] = []
        self._running: set[str] = set()  # what num_unfinished() counts
        self._abort_requested: set[str] = set()
        self.requests: list[tuple[str, Prompt, SamplingOptions]] = []
        self.aborted: list[str] = []  # ids aborted by abort(), close or cancellation
        self.peak_unfinished = 0  # the most requests it ever held at once
        self.is_healthy = True
        self.is_shut_down = False

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def generate(
        self, request_id: str, prompt: Prompt, sampling: SamplingOptions
    ) -> AsyncGenerator[EngineOutput, None]:
        tools = prompt.tools if isinstance(prompt, ChatPrompt) else None
        parsed = fake_tool_syntax if self._info.tool_parser else None
        extractor = extractor_for(tools, self._info.model, parsed)
        if isinstance(prompt, TextPrompt):  # what VllmEngine tokenizes, FIM shaped
            prompt = TextPrompt(prompt_text(prompt, self._info))
        prompt_tokens = count_prompt_tokens(prompt)
        max_tokens = sampling.max_tokens
        if max_tokens is not None and sampling.max_tokens_is_cap:  # as VllmEngine
            max_tokens = min(max_tokens, max(0, self._info.max_context - prompt_tokens))
        budget = self._fit_max_tokens(prompt, prompt_tokens, max_tokens)
        tokens, finish_reason = self._completion(prompt, sampling, budget)
        self.requests.append((request_id, prompt, sampling))
        self._running.add(request_id)
        self.peak_unfinished = max(self.peak_unfinished, len(self._running))
        is_done = False
        try:
            for start in range(0, len(tokens), self._tokens_per_step):
                await asyncio.sleep(self.step_delay_s)
                if request_id in self._abort_requested:
                    is_done = True  # like vLLM: a final output says why it ended
                    yield EngineOutput("", prompt_tokens, start, finish_reason="abort")
                    return
                end = min(start + self._tokens_per_step, len(tokens))
                reason = finish_reason if end == len(tokens) else None
                step = Extracted("".join(tokens[start:end]))
                if extractor is not None:
                    step = extractor.feed(step.text, range(start, end))
                    if reason is not None:
                        rest, reason = extractor.finish(reason)
                        step = Extracted(step.text + rest.text, step.tool_calls + rest.tool_calls)
                for index in range(sampling.n):  # every choice says the same
                    yield EngineOutput(
                        text=step.text,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=(start * sampling.n) + (end - start) * (index + 1),
                        finish_reason=reason,
                        tool_calls=step.tool_calls,
                        index=index,
                        logprobs=fake_logprobs(tokens[start:end], sampling.logprobs),
                    )
            is_done = True
        finally:
            self._running.discard(request_id)
            if not is_done and request_id not in self._abort_requested:
                self.aborted.append(request_id)
            self._abort_requested.discard(request_id)

    def _completion(
        self, prompt: Prompt, sampling: SamplingOptions, budget: int
    ) -> tuple[list[str], str]:
        """The tokens to stream and the finish reason, as a real engine would end."""
        reply = self._reply(prompt) if callable(self._reply) else self._reply
        tokens = split_tokens(reply) or [""]
        if sampling.ignore_eos:  # keep talking until the budget runs out
            return list(islice(cycle(tokens), budget)), "length"
        if len(tokens) > budget:
            return tokens[:budget], "length"
        return tokens, "stop"

    def _fit_max_tokens(self, prompt: Prompt, prompt_tokens: int, max_tokens: int | None) -> int:
        max_context = self._info.max_context
        where = "messages" if isinstance(prompt, ChatPrompt) else "prompt"
        if prompt_tokens >= max_context or (
            max_tokens is not None and prompt_tokens + max_tokens > max_context
        ):
            completion = max_tokens or 0
            raise EngineRequestError(
                f"This model's maximum context length is {max_context} tokens. However, you "
                f"requested {prompt_tokens + completion} tokens ({prompt_tokens} in the {where}, "
                f"{completion} in the completion). Please reduce the length of the {where} "
                "or completion.",
                code="context_length_exceeded",
                param=where if prompt_tokens >= max_context else "max_tokens",
            )
        return max_context - prompt_tokens if max_tokens is None else max_tokens

    async def prepare_embedding(self, request: EmbedInputs) -> list[list[int]]:
        """Like VllmEngine: a token is a word (its id a hash of it), plus [CLS] and [SEP]."""
        if self._info.task != "embed":
            raise EngineRequestError(NOT_AN_EMBEDDING_MODEL, code="model_not_supported")
        self._check_dimensions(request.dimensions)
        fitted = []
        for index, item in enumerate(request.inputs):
            if isinstance(item, str):
                ids = [CLS, *(word_id(t) for t in split_tokens(item)), SEP]
            else:
                check_token_ids(item, index, VOCAB_SIZE)
                ids = list(item)
            fitted.append(
                fit_embedding_input(ids, index, self._info.max_context, truncate=request.truncate)
            )
        return fitted

    def _check_dimensions(self, dimensions: int | None) -> None:
        size = self._info.embedding_size
        if dimensions is not None and not self._is_matryoshka:
            raise EngineRequestError(
                f"Model {self._info.model!r} does not support Matryoshka embeddings; "
                f"dimensions must be unset (received dimensions={dimensions}).",
                code="invalid_value",
            )
        if dimensions is not None and not 1 <= dimensions <= size:
            raise EngineRequestError(
                f"Model {self._info.model!r} only supports dimensions in range [1, {size}], "
                f"got {dimensions}.",
                code="invalid_value",
            )

    async def embed(
        self, request_id: str, token_ids: Sequence[Sequence[int]], dimensions: int | None
    ) -> list[bytes]:
        """A normalized bag of words: inputs sharing words point the same way."""
        self.embedded.append((request_id, [list(ids) for ids in token_ids], dimensions))
        self._running.add(request_id)
        try:
            await asyncio.sleep(self.step_delay_s)
            size = dimensions or self._info.embedding_size
            return [fake_vector(ids, size) for ids in token_ids]
        finally:
            self._running.discard(request_id)

    async def abort(self, request_id: str) -> None:
        """Like vLLM: the engine forgets the request at once; its stream ends with "abort"."""
        if request_id in self._running:
            self._running.discard(request_id)
            self._abort_requested.add(request_id)
            self.aborted.append(request_id)

    def num_unfinished(self) -> int:
        return len(self._running)

    def load(self) -> EngineLoad:
        return EngineLoad(running=len(self._running))

    async def check_health(self) -> None:
        if not self.is_healthy:
            raise RuntimeError("fake engine is dead")

    def shutdown(self) -> None:
        self.is_shut_down = True
