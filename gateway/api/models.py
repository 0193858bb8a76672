"""GET /v1/models — the models that have a live worker right now and the tenant may use."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency

from gateway.api.intake import audited, authenticate, new_request_id
from gateway.auth.authenticator import Authenticator
from gateway.inference import InferenceService
from gateway.schemas.models import ModelCard, ModelList

ENDPOINT = "/v1/models"


class ModelsController(Controller):
    path = ENDPOINT

    @get("")
    async def list_models(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
    ) -> ModelList:
        async with audited(inference, new_request_id("models"), ENDPOINT) as intake:
            principal = await authenticate(request, authenticator, intake)
            workers = await inference.queue.live_workers()
        cards: dict[str, ModelCard] = {}
        usable = (w for w in workers if principal.may_use(w.model))
        for worker in sorted(usable, key=lambda w: w.heartbeat_at):
            cards[worker.model] = ModelCard(
                id=worker.model,
                created=int(worker.heartbeat_at),
                owned_by="enclave",
                max_model_len=worker.max_context,
            )
        return ModelList(data=sorted(cards.values(), key=lambda c: c.id))
