"""Wire models of GET /v1/models."""

from __future__ import annotations

import msgspec


class ModelCard(msgspec.Struct, frozen=True):
    id: str
    created: int
    owned_by: str
    max_model_len: int
    object: str = "model"


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: str = "list"
