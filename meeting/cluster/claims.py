"""Which node composes a recording, when several share the store and the recordings folder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from meeting.cluster.lease import Lease

log = logging.getLogger(__name__)

TTL_MS = 30_000  # renewed every third of it while composing; lapses if the node dies


class SharedComposeClaims:
    """A recording is composed by the first node with a free compose slot to claim it."""

    def __init__(self, redis: Redis, node_id: str) -> None:
        self.redis = redis
        self.node_id = node_id

    @asynccontextmanager
    async def hold(self, recording_id: str) -> AsyncIterator[bool]:
        lease = Lease(self.redis, f"meetnow:compose:{recording_id}", self.node_id, TTL_MS)
        try:
            ours = await lease.take()
        except RedisError:
            ours = False  # cannot tell who composes it: leave it for the next rescan
        if not ours:
            yield False
            return
        keeper = asyncio.ensure_future(self._keep(lease))
        try:
            yield True
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(RedisError):
                await lease.release()

    @staticmethod
    async def _keep(lease: Lease) -> None:
        while True:
            await asyncio.sleep(TTL_MS / 3000)
            try:
                await lease.renew()
            except RedisError:
                pass  # the folder lock still keeps two composers apart on one file system
