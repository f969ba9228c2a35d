"""Node heartbeats: who is alive, and how loaded, as each node last said.

A node is taken for dead only when its heartbeat has been missing for a while from a Redis
that has itself been up all that time: after a Redis restart every heartbeat is missing at
once, and nobody is buried for it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

PREFIX = "meetnow:node:"
HEARTBEAT = 2.0  # seconds between a node's heartbeats
TTL_MS = 6000  # a heartbeat key lapses after three missed beats
DEAD_AFTER = 8.0  # seconds without a heartbeat, from a Redis up all along, before a node is dead


class Nodes:
    """This node's heartbeat, and every node seen alive lately."""

    def __init__(self, redis: Redis, node_id: str) -> None:
        self.redis = redis
        self.node_id = node_id
        self.load: dict[str, dict[str, Any]] = {node_id: {}}  # as each node last said
        self._seen: dict[str, float] = {node_id: time.monotonic()}  # node -> last heartbeat seen

    @property
    def alive(self) -> dict[str, dict[str, Any]]:
        """Nodes not (yet) taken for dead, with their load."""
        return self.load

    async def beat(self, load: dict[str, Any]) -> None:
        """Say this node is alive, with its load; lapses after TTL_MS without another beat."""
        await self.redis.set(PREFIX + self.node_id, json.dumps({**load, "at": time.time()}), px=TTL_MS)

    async def look(self) -> set[str]:
        """Refresh who is alive; returns the nodes now taken for dead (to be buried)."""
        now = time.monotonic()
        async for key in self.redis.scan_iter(match=PREFIX + "*", count=100):
            raw = await self.redis.get(key)
            if raw is not None:
                name = (key.decode() if isinstance(key, bytes) else key)[len(PREFIX):]
                self.load[name] = json.loads(raw)
                self._seen[name] = now
        self._seen[self.node_id] = now
        info = await self.redis.info("server")
        redis_up = float(info.get("uptime_in_seconds", 0))
        dead = {n for n, seen in self._seen.items() if now - seen > DEAD_AFTER and redis_up > DEAD_AFTER}
        for node in dead:
            del self._seen[node]
            self.load.pop(node, None)
        return dead

    def least_loaded(self) -> str:
        """The live node with the fewest people (this one on a tie)."""
        return min(self.load, key=lambda n: (self.load[n].get("participants", 0), n != self.node_id, n))
