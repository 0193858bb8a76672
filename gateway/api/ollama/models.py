"""Ollama's model endpoints: what is served (/api/tags, /api/ps, /api/show), the version,
and the model-management calls, which operators alone do (403 here).

GET    /              "Ollama is running" (GET and HEAD), what Ollama clients probe first
GET    /api/version   no key needed, like Ollama's own
GET    /api/tags      the models with a live worker that the caller's tenant may use
GET    /api/ps        the same, as loaded models with their context length
POST   /api/show      one model: details, model_info (context length), parameters, template
POST   /api/pull, /api/push, /api/create, /api/copy; DELETE /api/delete: 403
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, head, post
from litestar.di import NamedDependency

from gateway.api.intake import Gate, anyone, authorized_call, received
from gateway.api.ollama.translate import enclave_name, ollama_names, timestamp
from gateway.auth.authenticator import Authenticator
from gateway.errors import InvalidRequest, PermissionDenied
from gateway.inference import InferenceService
from gateway.queue.protocol import ModelCard, WorkerInfo
from gateway.schemas.ollama import (
    Details,
    ModelEntry,
    ModelRequest,
    Running,
    RunningModel,
    Show,
    Tags,
    Version,
)
from gateway.settings import OllamaSettings

MAX_SHOW_BYTES = 65536
FAR_FUTURE = 4102444800.0  # 2100-01-01: served models do not unload
MANAGED = "Models are managed by the operators of this server; {action} is not available."


def details(worker: WorkerInfo) -> Details:
    family = worker.architecture
    return Details(family=family, families=[family] if family else None)


def digest(worker: WorkerInfo) -> str:
    return worker.weights_digest.removeprefix("sha256:")


def parameters(card: ModelCard) -> str | msgspec.UnsetType:
    """The model's generation defaults as Modelfile PARAMETER lines (``name value``); none
    at all leaves the field out, as Ollama does (an empty line would stop Continue's
    reading of the answer, FIM detection included)."""
    defaults = sorted(card.generation_defaults.items())
    return "\n".join(f"{name} {value}" for name, value in defaults) or msgspec.UNSET


def model_info(worker: WorkerInfo) -> dict[str, Any]:
    """Ollama's keys, prefixed by the architecture: context length; vector length if any."""
    arch = worker.architecture or "unknown"
    info: dict[str, Any] = {
        "general.architecture": arch,
        f"{arch}.context_length": worker.max_context,
    }
    if worker.task == "embed":
        info[f"{arch}.embedding_length"] = worker.embedding_size
    return info


def capabilities(worker: WorkerInfo) -> list[str]:
    """What Ollama clients look for: ``tools`` only where a parser reads the model's calls."""
    if worker.task == "embed":
        return ["embedding"]
    return [
        "completion",
        *(["tools"] if worker.tool_parser else []),
        *(["insert"] if worker.can_insert else []),
    ]


def template(card: ModelCard) -> str:
    """The chat template; with a FIM template, Ollama's ``{{ if .Suffix }}`` branch before
    it, which is how Ollama clients (Continue) tell that a model fills in the middle."""
    if not card.fim_template:
        return card.chat_template
    fim = card.fim_template.replace("{prefix}", "{{ .Prompt }}").replace(
        "{suffix}", "{{ .Suffix }}"
    )
    return f"{{{{- if .Suffix }}}}{fim}{{{{- else }}}}{card.chat_template}{{{{- end }}}}"


async def usable_workers(
    request: Request[Any, Any, Any], inference: InferenceService, authenticator: Authenticator
) -> list[WorkerInfo]:
    """One live worker per model the caller may use (the longest context, as requests get)."""
    path = request.url.path
    async with authorized_call(
        request, inference, authenticator, path, path.removeprefix("/api/"), anyone
    ) as (_, principal):
        workers = await inference.queue.live_workers()
    best: dict[str, WorkerInfo] = {}
    for worker in workers:
        if principal.may_use(worker.model):
            known = best.get(worker.model)
            if known is None or worker.max_context > known.max_context:
                best[worker.model] = worker
    return [best[name] for name in sorted(best)]


class OllamaModelsController(Controller):
    tags = ("ollama",)

    @get("/", security=[], media_type="text/plain")
    async def root(self) -> str:
        """The liveness probe of Ollama clients (the CLI sends ``HEAD /`` before anything);
        no key needed, like Ollama's own."""
        return "Ollama is running"

    @head("/", security=[])
    async def probe(self) -> None:
        """``HEAD /``: the same, without the body."""

    @get("/api/version", security=[])
    async def version(self, ollama_settings: NamedDependency[OllamaSettings]) -> Version:
        """The Ollama API version this server speaks."""
        return Version(ollama_settings.version)

    @get("/api/tags")
    async def list_models(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        ollama_settings: NamedDependency[OllamaSettings],
    ) -> Tags:
        workers = await usable_workers(request, inference, authenticator)
        return Tags(
            [
                ModelEntry(name, name, timestamp(w.heartbeat_at), 0, digest(w), details(w))
                for w in workers
                for name in ollama_names(w.model, ollama_settings.aliases)
            ]
        )

    @get("/api/ps")
    async def running_models(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        ollama_settings: NamedDependency[OllamaSettings],
    ) -> Running:
        workers = await usable_workers(request, inference, authenticator)
        return Running(
            [
                RunningModel(
                    name=name,
                    model=name,
                    size=0,
                    digest=digest(w),
                    details=details(w),
                    expires_at=timestamp(FAR_FUTURE),
                    size_vram=0,
                    context_length=w.max_context,
                )
                for w in workers
                for name in ollama_names(w.model, ollama_settings.aliases)
            ]
        )

    @post("/api/show", status_code=200)
    async def show(
        self,
        request: Request[Any, Any, Any],
        gate: NamedDependency[Gate],
    ) -> Show:
        async with received(
            request,
            gate,
            endpoint="/api/show",
            id_prefix="show",
            schema=ModelRequest,
            max_body_bytes=MAX_SHOW_BYTES,
        ) as (_, principal, body):
            name = body.model or body.name
            if not name:
                raise InvalidRequest("model is required", param="model")
            model = enclave_name(name, gate.ollama_aliases)
            worker = await gate.inference.find_worker(model, principal)
            card = await gate.inference.queue.model_card(worker.worker_id)
        return Show(
            modelfile=f"# Served by Enclave: {model}\nFROM {model}\n",
            parameters=parameters(card),
            template=template(card),
            details=details(worker),
            model_info=model_info(worker),
            capabilities=capabilities(worker),
            modified_at=timestamp(worker.heartbeat_at),
        )

    @post(["/api/pull", "/api/push", "/api/create", "/api/copy"], status_code=403)
    async def manage(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
    ) -> None:
        await refuse_management(request, inference, authenticator)

    @delete("/api/delete", status_code=403)
    async def remove(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
    ) -> None:
        await refuse_management(request, inference, authenticator)


async def refuse_management(
    request: Request[Any, Any, Any], inference: InferenceService, authenticator: Authenticator
) -> None:
    path = request.url.path
    async with authorized_call(request, inference, authenticator, path, "manage", anyone):
        action = path.removeprefix("/api/")
        raise PermissionDenied(MANAGED.format(action=action), code="models_managed_by_operators")
