"""The composition root: every long-lived service built once, wired at construction."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web

from bot import ChatBot, configured_bots
from meeting.announcer import Announcer
from meeting.config import Config
from meeting.events import Bus
from meeting.metrics import ServerMetrics
from meeting.media.sfu import Sfu
from meeting.media.turn import TurnCredentials
from meeting.outbox import Outbox
from meeting.recording.service import RecordingService
from meeting.service import MeetingService
from meeting.session.context import SessionContext
from meeting.session.host import Sessions
from meeting.session.limits import ServerLimits
from meeting.store.base import Store

from .app import create_app
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
    sfu: Sfu
    sessions: Sessions
    app: web.Application
    bots: list[ChatBot]
    metrics: ServerMetrics
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        """Connect the bots, start delivering the outbox, and start the recordings' background
        work: resume unfinished composing, sweep expired recordings, watch the disk."""
        # Recordings first: it settles what a previous run left half-done before anyone can
        # start a new recording that might be taken for one of those.
        await self.recordings.start()
        for bot in self.bots:
            await bot.start()
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
        for bot in self.bots:
            await bot.stop()
        await self.sfu.close()


def turn_credentials(config: Config) -> TurnCredentials | None:
    """The TURN credential minter when ``[turn]`` is configured."""
    if not config.turn.urls:
        return None
    return TurnCredentials(config.turn.urls, config.turn.secret, config.turn.ttl)


def ice_servers_for(config: Config, turn: TurnCredentials | None = None) -> Callable[[], list[dict[str, Any]]]:
    """The STUN/TURN servers each joining page is given, in RTCIceServer form; with ``turn``,
    each call mints a fresh credential that expires."""
    servers = [
        {"urls": list(s.urls), **({"username": s.username, "credential": s.credential} if s.username else {})}
        for s in config.media.ice_servers
    ]

    def for_page() -> list[dict[str, Any]]:
        return [dict(s) for s in servers] + (turn.for_page() if turn is not None else [])

    return for_page


def build_server(config: Config, store: Store, *, sfu: Sfu | None = None,
                 clock: Callable[[], datetime] = _utc_now) -> Server:
    """Build every service around an opened store. ``sfu`` and ``clock`` are for tests."""
    bus = Bus()
    meetings = MeetingService(store, config.server.public_url, clock)
    outbox = Outbox(store)
    announcer = Announcer(meetings, outbox, bus)
    recordings = RecordingService(config, store, bus, clock=clock)
    turn = turn_credentials(config)
    sfu = sfu or Sfu(config.media, turn=turn)
    sessions = Sessions(SessionContext(
        sfu=sfu, meetings=meetings, bus=bus, recordings=recordings, ice_servers=ice_servers_for(config, turn),
        capacity=config.media.max_participants, clock=clock,
        limits=ServerLimits(config.media.max_meetings, config.media.max_people),
        max_waiting=config.media.max_waiting))
    app = create_app(config, meetings, sessions, recordings)
    metrics = ServerMetrics(sessions, sfu, outbox, recordings)
    if config.metrics.enabled and not config.metrics.listen:
        add_metrics_route(app, metrics, config.metrics.token)
    bots = configured_bots(config, meetings, announcer, outbox)
    for bot in bots:
        bot.attach(app)
    return Server(config, store, bus, meetings, outbox, announcer, recordings, sfu, sessions, app, bots,
                  metrics)
