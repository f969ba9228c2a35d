"""The composition root: every long-lived service built once, wired at construction."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from aiohttp import web

from bot import ChatBot, configured_bots
from meeting.announcer import Announcer
from meeting.config import Config
from meeting.events import Bus
from meeting.media.sfu import Sfu
from meeting.outbox import Outbox
from meeting.recording.service import RecordingService
from meeting.service import MeetingService
from meeting.session.context import context_for
from meeting.session.host import LiveMeetings, Sessions
from meeting.workers.pool import WorkerPool
from meeting.store.base import Store

from .app import create_app


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
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        """Connect the bots, start delivering the outbox, and start the recordings' background
        work: resume unfinished composing, sweep expired recordings, watch the disk."""
        # Recordings first: it settles what a previous run left half-done before anyone can
        # start a new recording that might be taken for one of those.
        await self.recordings.start()
        await self.sessions.start()
        for bot in self.bots:
            await bot.start()
        self.tasks.append(asyncio.create_task(self.outbox.run(), name="outbox"))
        self.tasks.append(asyncio.create_task(self.sessions.watch_disk(), name="disk-watch"))

    async def stop_background(self) -> None:
        """Stop what :meth:`start_background` started (live sessions close with the app)."""
        await self.sessions.close()
        await self.recordings.close()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        for bot in self.bots:
            await bot.stop()
        if self.sfu is not None:
            await self.sfu.close()


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
    recordings = RecordingService(config, store, bus, clock=clock)
    sessions: LiveMeetings
    workers = media_workers(config)
    if sfu is None and workers > 1:
        sessions = WorkerPool(config, store, bus, workers)
    else:
        sfu = sfu or Sfu(config.media)
        sessions = Sessions(context_for(config, sfu=sfu, meetings=meetings, bus=bus, recordings=recordings,
                                        clock=clock))
    app = create_app(config, meetings, sessions, recordings)
    bots = configured_bots(config, meetings, announcer, outbox)
    for bot in bots:
        bot.attach(app)
    return Server(config, store, bus, meetings, outbox, announcer, recordings, sfu, sessions, app, bots)
