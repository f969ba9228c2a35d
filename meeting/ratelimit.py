"""Token buckets: per connection, and per client address for joins and signaling."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass
class TokenBucket:
    """A budget refilled at ``rate`` per second up to ``burst``; ``take()`` spends one."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.stamp = self.clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    @property
    def full(self) -> bool:
        return self.tokens + (self.clock() - self.stamp) * self.rate >= self.burst


class KeyedLimiter:
    """One bucket per key (a client address). Full buckets are forgotten, so memory stays
    bounded by the clients that are actually busy."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic,
                 prune_every: int = 1000) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.prune_every = prune_every
        self._buckets: dict[str, TokenBucket] = {}
        self._calls = 0

    def take(self, key: str) -> bool:
        """Spend one token of ``key``'s budget; False when it is spent."""
        self._calls += 1
        if self._calls % self.prune_every == 0:
            self._buckets = {k: b for k, b in self._buckets.items() if not b.full}
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.clock)
        return bucket.take()

    def __len__(self) -> int:
        return len(self._buckets)


class Limiter(Protocol):
    """A per-key budget that may live elsewhere (several servers share one in Redis)."""

    async def allow(self, key: str) -> bool:
        """Spend one unit of ``key``'s budget; False when it is spent."""


class LocalLimiter:
    """A :class:`KeyedLimiter` of this process behind the :class:`Limiter` face."""

    def __init__(self, rate: float, burst: float) -> None:
        self.limiter = KeyedLimiter(rate, burst)

    async def allow(self, key: str) -> bool:
        return self.limiter.take(key)
