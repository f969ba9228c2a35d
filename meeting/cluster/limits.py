"""Limits shared by every node: per-address token buckets and Slack's replay memory, in Redis."""

from __future__ import annotations

import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

# A token bucket in one hash per key: refilled at ARGV[1]/s up to ARGV[2]; takes one token.
_TAKE = """
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or tonumber(ARGV[2])
local at = tonumber(state[2]) or now
tokens = math.min(tonumber(ARGV[2]), tokens + (now - at) * tonumber(ARGV[1]))
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) / tonumber(ARGV[1]) * 1000) + 1000)
return allowed
"""


class SharedLimiter:
    """``rate`` per second up to ``burst`` per key, counted over all nodes.

    When Redis cannot be reached the request is let through: a coordinator outage must not
    lock everyone out (each node still has its own connection caps).
    """

    def __init__(self, redis: Redis, name: str, rate: float, burst: float) -> None:
        self.redis = redis
        self.prefix = f"meetnow:limit:{name}:"
        self.rate = rate
        self.burst = burst
        self._take = redis.register_script(_TAKE)

    async def allow(self, key: str) -> bool:
        try:
            return bool(await self._take(keys=[self.prefix + key], args=[self.rate, self.burst, time.time()]))
        except RedisError:
            return True


class SharedSeenSignatures:
    """Slack request signatures seen by any node (a replay is refused on every node)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def first_use(self, signature: str, until: float) -> bool:
        ttl_ms = max(1, int((until - time.time()) * 1000))
        try:
            return bool(await self.redis.set("meetnow:slack-sig:" + signature, 1, px=ttl_ms, nx=True))
        except RedisError:
            return False  # cannot tell a replay from a first use: refuse, Slack retries
