"""A named lease in Redis held by one owner at a time: taken, kept, and given back."""

from __future__ import annotations

from redis.asyncio import Redis

# Extend the lease while it still names the owner, or make it again if nobody holds it
# (Redis restarted and forgot it: the holder keeps it rather than dropping what it does).
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if current == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# End the lease only while it still names the owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """``key`` held by ``owner`` for ``ttl_ms`` at a time; lapses by itself if not renewed."""

    def __init__(self, redis: Redis, key: str, owner: str, ttl_ms: int) -> None:
        self.redis = redis
        self.key = key
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def take(self) -> bool:
        """True if this owner holds it now (nobody else did)."""
        return bool(await self.redis.set(self.key, self.owner, px=self.ttl_ms, nx=True))

    async def renew(self) -> bool:
        """True while it is still this owner's (re-made if Redis had lost it)."""
        return bool(await self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.owner])
