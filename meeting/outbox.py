"""What is still to be said in chat: stored first, then delivered at least once, in order.

The core decides *what* to tell a channel (an entry: kind + payload); a platform's
``Courier`` decides *how* it looks there and reports how delivery went. Entries survive
restarts, retry with backoff, honour rate limits, and are dropped with one log line on
errors that retrying cannot fix. Status entries are coalesced: one row per meeting,
overwritten while pending, so a burst of joins makes one edit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Union

from meeting import ids
from meeting.logfmt import kv

log = logging.getLogger(__name__)

ANNOUNCE = "announce"
STATUS = "status"
RECORDING_READY = "recording_ready"
RECORDING_EXPIRING = "recording_expiring"

STATUS_COALESCE_S = 1.5  # a burst of joins inside this window makes one edit
MAX_BACKOFF_S = 300.0
GIVE_UP_AFTER = 25  # attempts; with the backoff cap, about two hours of trying
# Longest sleep with nothing due here: servers sharing a store enqueue entries this one is
# not woken for, and a dead server's claimed entries come free when their lease lapses.
IDLE_POLL_S = 15.0


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    event_key: str
    meeting_id: str
    platform: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    version: int


@dataclass(frozen=True)
class ChatPost:
    """Where a meeting's message lives, so status edits it and recordings reply to it."""

    meeting_id: str
    platform: str
    channel_id: str
    message_ref: str


@dataclass(frozen=True)
class Delivered:
    post: ChatPost | None = None  # set when the delivery made the meeting's message


@dataclass(frozen=True)
class Retry:
    reason: str
    after: float | None = None  # the platform's Retry-After, when it gave one


@dataclass(frozen=True)
class GiveUp:
    reason: str


Delivery = Union[Delivered, Retry, GiveUp]


class Courier(Protocol):
    """A platform adapter's delivery end."""

    platform: str

    async def deliver(self, entry: OutboxEntry, post: ChatPost | None) -> Delivery:
        """Say ``entry`` in chat; ``post`` is the meeting's message, if one was made."""


class OutboxStore(Protocol):
    async def outbox_put(self, event_key: str, meeting_id: str, platform: str, kind: str,
                         payload: str, next_at: float, replace: bool) -> None: ...
    # Entries due by ``now``. A store shared by several servers claims them for its own
    # server until settled (``outbox_finish``/``outbox_retry``), so no other delivers them.
    async def outbox_due(self, now: float, platforms: list[str], limit: int) -> list[OutboxEntry]: ...
    async def outbox_pending_announce(self, meeting_id: str) -> bool: ...
    async def outbox_finish(self, entry_id: int, version: int, state: str, error: str) -> None: ...
    async def outbox_retry(self, entry_id: int, version: int, attempts: int, next_at: float,
                           error: str) -> None: ...
    async def outbox_next_due(self, platforms: list[str]) -> float | None: ...
    async def outbox_backlog(self) -> dict[str, tuple[int, float]]: ...
    async def get_post(self, meeting_id: str) -> ChatPost | None: ...
    async def save_post(self, post: ChatPost) -> None: ...


def backoff(attempts: int, rng: random.Random = random.Random()) -> float:
    """Exponential backoff with jitter, capped."""
    return min(MAX_BACKOFF_S, 2.0 ** attempts) * (0.75 + rng.random() / 2)


class Outbox:
    """Enqueues chat messages and runs their delivery."""

    def __init__(self, store: OutboxStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.couriers: dict[str, Courier] = {}
        # Failed delivery attempts by platform (retried or given up), for the metrics.
        self.errors: dict[str, int] = {}
        self._wake = asyncio.Event()

    def register(self, courier: Courier) -> None:
        """Deliver this platform's entries through ``courier``."""
        self.couriers[courier.platform] = courier
        self._wake.set()

    async def put(self, event_key: str, meeting_id: str, platform: str, kind: str,
                  payload: dict[str, Any]) -> None:
        """Enqueue once: a second put with the same key changes nothing."""
        await self.store.outbox_put(event_key, meeting_id, platform, kind, json.dumps(payload),
                                    self.clock(), replace=False)
        self._wake.set()

    async def put_status(self, meeting_id: str, platform: str, payload: dict[str, Any]) -> None:
        """Set the meeting's pending status, replacing any not yet delivered."""
        await self.store.outbox_put(f"status:{meeting_id}", meeting_id, platform, STATUS,
                                    json.dumps(payload), self.clock() + STATUS_COALESCE_S, replace=True)
        self._wake.set()

    async def backlog(self) -> dict[str, tuple[int, float]]:
        """Per platform: entries still to deliver, and the age in seconds of the oldest."""
        now = self.clock()
        return {platform: (count, max(0.0, now - oldest))
                for platform, (count, oldest) in (await self.store.outbox_backlog()).items()}

    async def deliver_due(self, limit: int = 50) -> int:
        """One pass over what is due now; returns how many entries were attempted."""
        entries = await self.store.outbox_due(self.clock(), sorted(self.couriers), limit)
        for entry in entries:
            await self._deliver(entry)
        return len(entries)

    async def run(self) -> None:
        """Deliver forever: wake on new entries or when the next retry is due."""
        while True:
            # Cleared before looking, so a put that lands while we look still wakes us.
            self._wake.clear()
            try:
                while await self.deliver_due():
                    pass
                next_at = await self.store.outbox_next_due(sorted(self.couriers))
            except Exception:
                log.exception("outbox pass failed")
                next_at = self.clock() + 5
            timeout = IDLE_POLL_S if next_at is None else min(IDLE_POLL_S, max(0.0, next_at - self.clock()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _deliver(self, entry: OutboxEntry) -> None:
        post = await self.store.get_post(entry.meeting_id)
        if entry.kind != ANNOUNCE and post is None:
            if await self.store.outbox_pending_announce(entry.meeting_id):
                # The message to edit or reply to is not made yet: wait for it.
                await self.store.outbox_retry(entry.id, entry.version, entry.attempts, self.clock() + 1,
                                              "waiting")
            else:
                await self._finish(entry, "dropped", "the meeting's message was never posted")
            return
        try:
            result = await self.couriers[entry.platform].deliver(entry, post)
        except Exception as exc:  # a network error or a bug: retry, never lose the entry
            log.warning("outbox delivery raised %s", kv(kind=entry.kind, error=repr(exc)[:200]))
            result = Retry(repr(exc)[:200])
        if not isinstance(result, Delivered):
            self.errors[entry.platform] = self.errors.get(entry.platform, 0) + 1
        if isinstance(result, Delivered):
            if result.post is not None:
                await self.store.save_post(result.post)
            await self._finish(entry, "done", "")
        elif isinstance(result, GiveUp) or entry.attempts + 1 >= GIVE_UP_AFTER:
            await self._finish(entry, "dropped", result.reason)
        else:
            delay = result.after if result.after is not None else backoff(entry.attempts)
            await self.store.outbox_retry(entry.id, entry.version, entry.attempts + 1,
                                          self.clock() + delay, result.reason)

    async def _finish(self, entry: OutboxEntry, state: str, reason: str) -> None:
        await self.store.outbox_finish(entry.id, entry.version, state, reason)
        if state == "dropped":
            log.warning("chat message dropped %s", kv(
                platform=entry.platform, kind=entry.kind, meeting=ids.short(entry.meeting_id),
                reason=reason))
