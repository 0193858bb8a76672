"""GET /v1/audit/checkpoint-key — the key that verifies the audit log's signed checkpoints.

Public on purpose: anyone holding a checkpoint must be able to check its signature.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from gateway.errors import NotFound


class CheckpointKey(msgspec.Struct, frozen=True):
    origin: str
    verifier_key: str


class AuditKeyController(Controller):
    path = "/v1/audit"

    @get("/checkpoint-key")
    async def checkpoint_key(
        self, checkpoint_key: NamedDependency[CheckpointKey | None]
    ) -> CheckpointKey:
        if checkpoint_key is None:
            raise NotFound("Checkpoint signing is not configured on this gateway.")
        return checkpoint_key
