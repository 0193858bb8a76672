"""Wire models of Ollama's embedding API: ``/api/embed`` and the older ``/api/embeddings``.

Durations are nanoseconds, as in gateway/schemas/ollama.py.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from gateway.schemas.ollama import Options


class EmbedRequest(msgspec.Struct, frozen=True):
    model: str
    input: Any = None
    """A string or an array of strings: see gateway/api/embedding_inputs.py."""
    truncate: bool = True
    """Cut inputs longer than the context (Ollama's default); false: such an input is a 400."""
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    options: Options | None = None  # accepted; nothing in them changes a pooling model
    keep_alive: Any = None


class EmbedResponse(msgspec.Struct, frozen=True):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingsRequest(msgspec.Struct, frozen=True):
    model: str
    prompt: str = ""
    options: Options | None = None
    keep_alive: Any = None


class EmbeddingsResponse(msgspec.Struct, frozen=True):
    embedding: list[float]
