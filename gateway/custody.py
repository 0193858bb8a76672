"""Custody of outcome records: every accepted request gets exactly one, even when the
gateway that accepted it dies.

A gateway registers each accepted request in its Redis hash of accepted requests (in the
enqueue script's atomic step) and keeps a liveness key with a TTL. Before it writes a
request's outcome record it takes the request out of that hash (HDEL): 1, the outcome is
its to write; 0, a sweeper took it, and if the gateway's fence key is set the sweeper wrote
(or will write) the outcome, so the gateway does not. Every gateway also sweeps: for a
registered gateway whose liveness key is gone, it moves that gateway's hash to a sweeping
hash and sets the fence (one atomic script: one sweeper wins, and the dead gateway cannot
take a request out of the hash at the same moment), writes a ``gateway_lost`` outcome per
request, committed, and only then deletes the request from the sweeping hash (in batches).
A sweeper that dies midway leaves the requests still to write, under a claim key that
expires. A sweeper sweeps only once its own heartbeats have got through for a whole TTL:
after a Redis outage every liveness key may have expired, and live gateways renew theirs
first.

Remaining windows, each needing a crash or pause at one exact moment:
- a gateway that dies between its HDEL and its outcome's commit: no outcome record;
- a gateway that cannot reach Redis when it ends a request writes the outcome anyway and
  deletes the entry once Redis answers; if it dies first, or other gateways take it for
  dead meanwhile, the request gets its outcome and a ``gateway_lost`` one;
- a sweeper that dies between a batch's commit and its HDEL (the batch gets its
  ``gateway_lost`` record twice), or is paused for longer than ``claim_ttl_s`` inside a
  batch while another sweeper takes over (the same);
- Redis losing its data (no append-only file) and a gateway dying: no outcome records for
  that gateway's requests;
- more than ``MAX_UNRELEASED`` outcomes written while Redis was unreachable: the entries
  of the oldest are forgotten, and would be swept if the gateway died later.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from importlib.resources import files
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.audit.records import AuditEntry, AuditLog
from gateway.queue.protocol import (
    gateway_accepted_key,
    gateway_alive_key,
    gateway_fence_key,
    gateway_sweeper_key,
    gateway_sweeping_key,
    gateways_key,
)
from gateway.redis_batch import CommandBatcher

logger = logging.getLogger("enclave.custody")

GATEWAY_LOST = "gateway_lost"
GATEWAY_LOST_STATUS = 502
DEFAULT_ALIVE_TTL_S = 15.0
DEFAULT_FENCE_TTL_S = 24 * 3600
DEFAULT_CLAIM_TTL_S = 60.0
DEFAULT_SWEEP_BATCH = 200
MAX_UNRELEASED = 100_000
"""Registry entries kept for deletion while Redis is unreachable (ids, a few MB)."""
_RELEASE_BATCH = 10_000
_REGISTERED_FIELDS = (
    "request_id",
    "endpoint",
    "tenant_id",
    "user_id",
    "key_id",
    "model",
    "prompt_sha256",
)
"""What the outcome record of a request shares with its accepted record."""


def registry_value(accepted: AuditEntry) -> bytes:
    """What the registry keeps of an accepted request: enough to write its outcome."""
    return msgspec.json.encode({name: getattr(accepted, name) for name in _REGISTERED_FIELDS})


def lost_outcome(value: bytes) -> AuditEntry:
    """The outcome record of a registered request whose gateway died: 502 ``gateway_lost``."""
    fields: dict[str, str | None] = msgspec.json.decode(value)
    return AuditEntry(
        request_id=str(fields["request_id"]),
        event="outcome",
        endpoint=str(fields["endpoint"]),
        status=GATEWAY_LOST_STATUS,
        tenant_id=fields.get("tenant_id"),
        user_id=fields.get("user_id"),
        key_id=fields.get("key_id"),
        model=fields.get("model"),
        prompt_sha256=fields.get("prompt_sha256"),
        error_code=GATEWAY_LOST,
    )


class OutcomeCustody:
    """One gateway's side: its registry, its liveness key, and the sweeper it runs."""

    def __init__(
        self,
        redis: Redis,
        audit: AuditLog,
        gateway_id: str,
        *,
        alive_ttl_s: float = DEFAULT_ALIVE_TTL_S,
        fence_ttl_s: int = DEFAULT_FENCE_TTL_S,
        claim_ttl_s: float = DEFAULT_CLAIM_TTL_S,
        sweep_batch: int = DEFAULT_SWEEP_BATCH,
    ) -> None:
        self._redis = redis
        self._commands = CommandBatcher(redis)  # outcomes written together: one round trip
        self._audit = audit
        self.gateway_id = gateway_id
        self.registry_key = gateway_accepted_key(gateway_id)
        self.alive_ttl_s = alive_ttl_s
        self._fence_ttl_s = fence_ttl_s
        self._claim_ttl_ms = int(claim_ttl_s * 1000)
        self._batch = sweep_batch
        self._unreleased: dict[str, None] = {}
        """Requests whose outcome was written while Redis was unreachable (or whose
        enqueue failed): maybe still in the registry, deleted from it by the next
        heartbeats that get through; oldest first."""
        self._steady_since: float | None = None
        """monotonic() of the first heartbeat of the current run without a failure or a
        gap longer than the TTL (a pause)."""
        self._last_beat = -math.inf
        self._is_fenced = False
        script = files("gateway.queue").joinpath("claim_registry.lua").read_text("utf-8")
        self._claim_registry: Any = redis.register_script(script)

    @property
    def is_steady(self) -> bool:
        """Whether this gateway's heartbeats have got through for a whole TTL: only then
        does it take another gateway's missing liveness key for a dead gateway."""
        steady = self._steady_since
        return steady is not None and time.monotonic() - steady >= self.alive_ttl_s

    async def may_write_outcome(self, request_id: str, *, is_registered: bool = True) -> bool:
        """Take the request out of this gateway's registry; whether its outcome record is
        still this gateway's to write. ``is_registered``: its enqueue (which registers it)
        returned; if not, the entry may never have existed, the outcome is written, and
        the entry (if any) is deleted with the next heartbeat: the enqueue has just failed,
        and a request refused then should not wait for Redis once more."""
        if not is_registered:
            self._release_later(request_id)
            return True
        try:
            registry = self.registry_key
            if await self._commands.call(lambda p: p.hdel(registry, request_id)):
                return True
            if not await self._redis.exists(gateway_fence_key(self.gateway_id)):
                return True  # Redis lost the entry: nobody else will write the outcome
        except RedisError as exc:
            logger.warning("registry unreachable (%s); writing the outcome", type(exc).__name__)
            self._release_later(request_id)
            return True
        logger.error(
            "outcome of %s not written: this gateway was taken for dead, and a sweeper "
            "recorded the request as %s",
            request_id,
            GATEWAY_LOST,
        )
        return False

    def _release_later(self, request_id: str) -> None:
        if len(self._unreleased) >= MAX_UNRELEASED:
            oldest = next(iter(self._unreleased))
            del self._unreleased[oldest]
            logger.error("registry entry of %s forgotten: Redis unreachable too long", oldest)
        self._unreleased[request_id] = None

    async def run(self, stop: asyncio.Event) -> None:
        """Renew the liveness key and sweep dead gateways, each every fifth of the TTL,
        until ``stop``; then delete the liveness key, so what is left here is swept at once.
        Two loops: a long sweep (a big registry, a slow audit store) must not delay the
        heartbeat past the TTL."""
        await asyncio.gather(self._beat_until(stop), self._sweep_until(stop))
        with contextlib.suppress(RedisError):
            await self._redis.delete(gateway_alive_key(self.gateway_id))

    async def _beat_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.alive_ttl_s / 5)

    async def _sweep_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:  # the next round tries again
                logger.exception("sweeping dead gateways failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.alive_ttl_s / 5)

    async def beat(self) -> None:
        """Renew the liveness key; release entries whose outcome was written meanwhile."""
        unreleased = list(itertools.islice(self._unreleased, _RELEASE_BATCH))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(gateway_alive_key(self.gateway_id), b"1", px=int(self.alive_ttl_s * 1000))
                pipe.sadd(gateways_key(), self.gateway_id)
                pipe.exists(gateway_fence_key(self.gateway_id))
                if unreleased:
                    pipe.hdel(self.registry_key, *unreleased)
                replies = await pipe.execute()
        except RedisError as exc:
            logger.warning("gateway heartbeat failed: %s", type(exc).__name__)
            self._steady_since = None
            return
        for request_id in unreleased:
            self._unreleased.pop(request_id, None)
        now = time.monotonic()
        if self._steady_since is None or now - self._last_beat > self.alive_ttl_s:
            self._steady_since = now
        self._last_beat = now
        if replies[2] and not self._is_fenced:
            logger.error(
                "this gateway was taken for dead (paused or cut off for over %g s): the "
                "requests it held were recorded as %s by another gateway",
                self.alive_ttl_s,
                GATEWAY_LOST,
            )
        self._is_fenced = bool(replies[2])

    async def sweep(self) -> int:
        """Write the outcome records of dead gateways' requests; how many were written.
        Only after this gateway's own heartbeats got through for a whole TTL: after a Redis
        outage every liveness key may have expired, and live gateways need one round to
        renew theirs."""
        if not self.is_steady:
            return 0
        members: Any = await self._redis.smembers(gateways_key())
        written = 0
        for member in sorted(members):
            gateway_id = member.decode()
            if gateway_id != self.gateway_id:
                written += await self.sweep_gateway(gateway_id)
        return written

    async def sweep_gateway(self, gateway_id: str) -> int:
        """Claim a dead gateway's requests (nothing if it is alive or another sweeper has
        them) and write their outcomes; how many were written."""
        keys = [
            gateway_alive_key(gateway_id),
            gateway_accepted_key(gateway_id),
            gateway_sweeping_key(gateway_id),
            gateway_fence_key(gateway_id),
            gateway_sweeper_key(gateway_id),
            gateways_key(),
        ]
        args = [self.gateway_id, self._claim_ttl_ms, self._fence_ttl_s, gateway_id]
        entries: list[bytes] | None = await self._claim_registry(keys=keys, args=args)
        if not entries:
            return 0
        requests = list(zip(entries[::2], entries[1::2], strict=True))
        logger.error(
            "gateway %s is gone with %d accepted requests; recording them as %s",
            gateway_id,
            len(requests),
            GATEWAY_LOST,
        )
        written = 0
        for start in range(0, len(requests), self._batch):
            if start and not await self._renew_claim(gateway_id):
                logger.error("another gateway took over sweeping gateway %s", gateway_id)
                break
            written += await self._write_lost(gateway_id, requests[start : start + self._batch])
        if written < len(requests):
            logger.error(
                "%d outcome records of gateway %s not written yet; retrying",
                len(requests) - written,
                gateway_id,
            )
        return written

    async def _write_lost(self, gateway_id: str, requests: list[tuple[bytes, bytes]]) -> int:
        """Commit the ``gateway_lost`` outcomes of one batch (one group commit, mostly),
        then delete the committed ones from the sweeping hash; how many were committed."""
        results = await asyncio.gather(
            *(self._audit.append(lost_outcome(value)) for _, value in requests),
            return_exceptions=True,
        )
        committed = [rid for (rid, _), r in zip(requests, results, strict=True) if r is None]
        if committed:
            await self._redis.hdel(gateway_sweeping_key(gateway_id), *committed)
        return len(committed)

    async def _renew_claim(self, gateway_id: str) -> bool:
        """Extend this sweeper's claim on ``gateway_id``; False if it is no longer ours."""
        claim = gateway_sweeper_key(gateway_id)
        holder: Any = await self._redis.get(claim)
        if holder != self.gateway_id.encode():
            return False
        await self._redis.pexpire(claim, self._claim_ttl_ms)
        return True
