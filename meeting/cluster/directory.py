"""Which node hosts each live meeting: leases in Redis that lapse when the node dies."""

from __future__ import annotations

from redis.asyncio import Redis

PREFIX = "meetnow:meeting:"
LEASE_MS = 10_000  # renewed every RENEW seconds while the meeting is live on its node
RENEW = 3.0

# Keep (or re-make, after Redis lost it) a lease that names this node or nobody.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 0
"""
# Delete the lease only if it still names the given node (a newer owner keeps theirs).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Directory:
    """Meeting -> hosting node, first come first served."""

    def __init__(self, redis: Redis, node_id: str) -> None:
        self.redis = redis
        self.node_id = node_id
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    async def owner(self, meeting_id: str) -> str | None:
        value = await self.redis.get(PREFIX + meeting_id)
        return value.decode() if isinstance(value, bytes) else value

    async def claim(self, meeting_id: str, node: str, alive: set[str]) -> str:
        """The meeting's host: its current one if alive, else ``node`` (unless another won)."""
        current = await self.owner(meeting_id)
        if current is not None and current in alive:
            return current
        if current is not None:  # its node died: the lease goes before it lapses
            await self._release(keys=[PREFIX + meeting_id], args=[current])
        if await self.redis.set(PREFIX + meeting_id, node, px=LEASE_MS, nx=True):
            return node
        return await self.owner(meeting_id) or node

    async def renew(self, meeting_ids: list[str]) -> None:
        """Keep the leases of the meetings this node hosts (re-made after Redis lost them)."""
        for meeting_id in meeting_ids:
            await self._renew(keys=[PREFIX + meeting_id], args=[self.node_id, LEASE_MS])

    async def release(self, meeting_id: str) -> None:
        """The meeting is no longer live here."""
        await self._release(keys=[PREFIX + meeting_id], args=[self.node_id])
