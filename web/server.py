"""The composition root: every long-lived service built once, wired at construction."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from aiohttp import web
from redis.asyncio import Redis

from bot import ChatBot, configured_bots
from meeting.announcer import Announcer
from meeting.cluster.bridge import ClusterMeetings
from meeting.cluster.claims import SharedComposeClaims
from meeting.cluster.leader import Leadership
from meeting.cluster.limits import SharedLimiter, SharedSeenSignatures
from meeting.config import Config
from meeting.events import Bus
from meeting.metrics import ServerMetrics
from meeting.media.sfu import Sfu
from meeting.outbox import Outbox
from meeting.recording.jobs import OnlyServer
from meeting.recording.service import RecordingService
from meeting.service import MeetingService
from meeting.session.context import context_for, turn_credentials
from meeting.session.host import LiveMeetings, Sessions
from meeting.workers.pool import WorkerPool
from meeting.store.base import Store

from .app import create_app
from .limits import JOIN_BURST, JOINS_PER_SECOND, MINT_BURST, MINTS_PER_SECOND, SocketLimits
from .metrics import add_metrics_route


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Server:
    """Everything ``meetnow serve`` runs, built but not started."""

    config: Config
    store: Store
    bus: Bus
    meetings: MeetingService
    outbox: Outbox
    announcer: Announcer
    recordings: RecordingService
    sfu: Sfu | None  # this process's media plane; None when meetings live in workers
    sessions: LiveMeetings
    app: web.Application
    bots: list[ChatBot]
    metrics: ServerMetrics
    redis: Redis | None = None  # a cluster's coordinator
    node_id: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        """Connect the bots, start delivering the outbox, and start the recordings' background
        work: resume unfinished composing, sweep expired recordings, watch the disk."""
        # Recordings first: it settles what a previous run left half-done before anyone can
        # start a new recording that might be taken for one of those.
        await self.recordings.start()
        await self.sessions.start()
        if self.redis is None:
            await self._start_bots()
        else:
            # A bot's gateway connection is held by one node at a time.
            leadership = Leadership(self.redis, "chat-bots", self.node_id, self._start_bots, self._stop_bots)
            self.tasks.append(asyncio.create_task(leadership.run(), name="chat-bots-leadership"))
        self.tasks.append(asyncio.create_task(self.outbox.run(), name="outbox"))
        self.tasks.append(asyncio.create_task(self.sessions.watch_disk(), name="disk-watch"))
        self.tasks.append(asyncio.create_task(self.metrics.loop_lag.run(), name="loop-lag"))

    async def stop_background(self) -> None:
        """Stop what :meth:`start_background` started (live sessions close with the app)."""
        await self.sessions.close()
        await self.recordings.close()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        await self._stop_bots()
        if self.sfu is not None:
            await self.sfu.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def _start_bots(self) -> None:
        for bot in self.bots:
            await bot.start()

    async def _stop_bots(self) -> None:
        for bot in self.bots:
            await bot.stop()


def media_workers(config: Config) -> int:
    """How many media worker processes ``server.workers`` asks for (0: one per core)."""
    return config.server.workers or os.cpu_count() or 1


def build_server(config: Config, store: Store, *, sfu: Sfu | None = None,
                 clock: Callable[[], datetime] = _utc_now) -> Server:
    """Build every service around an opened store. ``sfu`` and ``clock`` are for tests.

    With more than one media worker, live meetings run in worker processes
    (:class:`WorkerPool`); otherwise here, on this process's own SFU.
    """
    bus = Bus()
    meetings = MeetingService(store, config.server.public_url, clock)
    outbox = Outbox(store)
    announcer = Announcer(meetings, outbox, bus)
    redis = Redis.from_url(config.cluster.redis_url) if config.cluster.redis_url else None
    node_id = f"{config.cluster.node_id or socket.gethostname()}-{secrets.token_hex(3)}"
    claims = SharedComposeClaims(redis, node_id) if redis is not None else OnlyServer()
    recordings = RecordingService(config, store, bus, clock=clock, claims=claims)
    sessions: LiveMeetings
    pool: WorkerPool | None = None
    workers = media_workers(config)
    if sfu is None and workers > 1:
        sessions = pool = WorkerPool(config, store, bus, workers)
    else:
        sfu = sfu or Sfu(config.media, turn=turn_credentials(config))
        sessions = Sessions(context_for(config, sfu=sfu, meetings=meetings, bus=bus, recordings=recordings,
                                        clock=clock))
    shared: dict[str, object] = {}
    seen = None
    if redis is not None:
        sessions = ClusterMeetings(sessions, redis, node_id, meetings.get, bus)
        shared = {"mint_limit": SharedLimiter(redis, "mint", MINTS_PER_SECOND, MINT_BURST),
                  "socket_limits": SocketLimits(connects=SharedLimiter(redis, "join", JOINS_PER_SECOND, JOIN_BURST))}
        seen = SharedSeenSignatures(redis)
    # Counted as the cluster sees them (its relayed sockets too), where there is one.
    metrics = ServerMetrics(sessions, sfu, outbox, recordings)
    if pool is not None:
        metrics.workers.append(pool.process_stats)
    app = create_app(config, meetings, sessions, recordings, **shared)  # type: ignore[arg-type]
    if config.metrics.enabled and not config.metrics.listen:
        add_metrics_route(app, metrics, config.metrics.token)
    bots = configured_bots(config, meetings, announcer, outbox, seen)
    for bot in bots:
        bot.attach(app)
    return Server(config, store, bus, meetings, outbox, announcer, recordings, sfu, sessions, app, bots,
                  metrics, redis, node_id)
