"""Node heartbeats: who is alive, and how loaded, as each node last said.

A node is taken for dead when its heartbeat has been missing for a while from a Redis that
has itself been up all that time (after a Redis restart every heartbeat is missing at once,
and nobody is buried for it), or at once when nothing listens on its channel any more: a
node's process that dies (killed, crashed) drops its Redis connection with it, long before
its heartbeat lapses. A hung node keeps its connection and is found by its heartbeat.
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
# A Redis up for less than this may not have every node's subscription back yet (they
# re-subscribe a second after it returns): a silent channel then says nothing.
SETTLED_AFTER = 5.0


class Nodes:
    """This node's heartbeat, and every node seen alive lately.

    ``channel`` is the prefix of the pub/sub channel each node listens on (+ its id).
    """

    def __init__(self, redis: Redis, node_id: str, channel: str) -> None:
        self.redis = redis
        self.node_id = node_id
        self.channel = channel
        self.load: dict[str, dict[str, Any]] = {node_id: {}}  # as each node last said
        self._seen: dict[str, float] = {node_id: time.monotonic()}  # node -> last heartbeat seen
        self._buried: set[str] = set()  # taken for dead (until heard and listening again)

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
        heard: dict[str, dict[str, Any]] = {}
        async for key in self.redis.scan_iter(match=PREFIX + "*", count=100):
            raw = await self.redis.get(key)
            if raw is not None:
                heard[(key.decode() if isinstance(key, bytes) else key)[len(PREFIX):]] = json.loads(raw)
        redis_up = await self._redis_uptime()
        others = [n for n in heard if n != self.node_id]
        silent = await self._silent(others) if redis_up > SETTLED_AFTER else set()
        for name, load in heard.items():
            if name not in silent:
                self.load[name] = load
                self._seen[name] = now
                self._buried.discard(name)
        self._seen[self.node_id] = now
        dead = {n for n, seen in self._seen.items()
                if n in silent or (now - seen > DEAD_AFTER and redis_up > DEAD_AFTER)}
        for node in dead:
            self.forget(node)
        return dead

    async def gone(self, node: str) -> bool:
        """Whether ``node`` is gone by now (nothing listens on its channel), asked of Redis
        right away: for a connection about to be relayed there between two looks."""
        if node == self.node_id or await self._redis_uptime() <= SETTLED_AFTER:
            return False
        return node in await self._silent([node])

    def forget(self, node: str) -> None:
        """Take ``node`` for dead until its heartbeat and its channel are both back."""
        self._seen.pop(node, None)
        self.load.pop(node, None)
        self._buried.add(node)

    def buried(self, node: str) -> bool:
        """Whether ``node`` was taken for dead (rather than not seen yet: one that just started)."""
        return node in self._buried

    def least_loaded(self) -> str:
        """The live node with the fewest people (this one on a tie)."""
        return min(self.load, key=lambda n: (self.load[n].get("participants", 0), n != self.node_id, n))

    async def _silent(self, nodes: list[str]) -> set[str]:
        if not nodes:
            return set()
        counts = await self.redis.pubsub_numsub(*(self.channel + n for n in nodes))
        listened = {(c.decode() if isinstance(c, bytes) else c) for c, count in counts if count > 0}
        return {n for n in nodes if self.channel + n not in listened}

    async def _redis_uptime(self) -> float:
        info = await self.redis.info("server")
        return float(info.get("uptime_in_seconds", 0))
