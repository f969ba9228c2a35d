"""One node at a time holds a job (a chat bot's gateway connection), taken over when it dies."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from meeting.cluster.lease import Lease
from meeting.logfmt import kv

log = logging.getLogger(__name__)

PREFIX = "meetnow:leader:"
TTL_MS = 10_000
RENEW = 3.0


Hook = Callable[[], Awaitable[None]]


class Leadership:
    """Runs ``on_elected`` when this node takes ``name``, ``on_lost`` when it no longer holds it."""

    def __init__(self, redis: Redis, name: str, node_id: str, on_elected: Hook, on_lost: Hook) -> None:
        self.name = name
        self.lease = Lease(redis, PREFIX + name, node_id, TTL_MS)
        self.node_id = node_id
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.holding = False
        self._confirmed = 0.0  # when the lease was last known to be ours

    async def run(self) -> None:
        """Try to take the lead, keep it, and give it up cleanly, forever."""
        try:
            while True:
                await self._step()
                await asyncio.sleep(RENEW)
        finally:
            if self.holding:
                await self._lose()
                try:
                    await self.lease.release()
                except RedisError:
                    pass  # the lease lapses by itself

    async def _step(self) -> None:
        now = time.monotonic()
        try:
            if self.holding:
                if await self.lease.renew():
                    self._confirmed = now
                else:
                    await self._lose()
            elif await self.lease.take():
                self.holding, self._confirmed = True, now
                log.info("leading %s", kv(job=self.name, node=self.node_id))
                await self.on_elected()
        except RedisError as exc:
            # Unconfirmed for a whole lease: another node may hold it once Redis is back.
            if self.holding and now - self._confirmed > TTL_MS / 1000:
                await self._lose()
            log.warning("leadership unknown %s", kv(job=self.name, error=type(exc).__name__))

    async def _lose(self) -> None:
        self.holding = False
        log.info("no longer leading %s", kv(job=self.name, node=self.node_id))
        await self.on_lost()
