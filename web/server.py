"""The whole server assembled: store, services, web app, bots and background work."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiohttp import web

from bot import ChatBot, configured_bots
from meeting.announcer import Announcer
from meeting.config import Config
from meeting.outbox import Outbox
from meeting.recording.service import RecordingService
from meeting.service import MeetingService
from meeting.media.sfu import Sfu
from meeting.store.base import Store

from .app import create_app
from .keys import SIGNALING
from .recordings import RECORDINGS


@dataclass
class Server:
    """Everything ``meetnow serve`` runs, built but not started."""

    config: Config
    meetings: MeetingService
    outbox: Outbox
    announcer: Announcer
    app: web.Application
    bots: list[ChatBot]
    recordings: RecordingService
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        """Connect the bots, start delivering the outbox, and start the recordings' background
        work: resume unfinished composing, sweep expired recordings (after the app is serving)."""
        # Recordings first: it settles what a previous run left half-done before anyone can
        # start a new recording that might be taken for one of those.
        await self.recordings.start()
        for bot in self.bots:
            await bot.start()
        self.tasks.append(asyncio.create_task(self.outbox.run(), name="outbox"))

    async def stop_background(self) -> None:
        await self.recordings.close()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for bot in self.bots:
            await bot.stop()


def build_server(config: Config, store: Store, sfu: Sfu | None = None) -> Server:
    """Wire the parts together around an opened store."""
    meetings = MeetingService(store, config.server.public_url)
    outbox = Outbox(store)
    announcer = Announcer(meetings, outbox)
    app = create_app(config, meetings, sfu=sfu, notifier=announcer)
    app[SIGNALING].listeners.append(announcer.on_room_event)
    bots = configured_bots(config, meetings, announcer, outbox)
    for bot in bots:
        bot.attach(app)
    return Server(config, meetings, outbox, announcer, app, bots, app[RECORDINGS])
