"""The aiohttp application factory: routes, middlewares and what they share."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

from aiohttp import web

from meeting.config import Config
from meeting.recording.service import RecordingService
from meeting.recording.retention import RecordingNotifier
from meeting.session.room import Rooms
from meeting.service import MeetingService
from meeting.media.sfu import Sfu

from . import api, pages, recordings
from .errors import error_pages
from .keys import CONFIG, MEETINGS, MINT_LIMIT, SIGNALING
from .meeting_socket import Signaling, close_all, meeting_socket
from .ratelimit import KeyedLimiter
from .recordings import RECORDINGS
from .security import add_security_headers

STATIC = Path(__file__).parent / "static"
# Meetings minted over HTTP per client address: plenty for people, little for a script.
MINTS_PER_SECOND = 0.2
MINT_BURST = 20.0
# Requests are small JSON or form bodies; anything bigger is refused before it is read.
MAX_BODY = 64 * 1024


def create_app(config: Config, meetings: MeetingService, sfu: Sfu | None = None, *,
               notifier: RecordingNotifier | None = None,
               clock: Callable[[], datetime] | None = None) -> web.Application:
    """Build the web application around an opened store's meeting service.

    ``sfu`` defaults to one made from ``config.media``; tests pass their own. ``notifier``
    tells chat channels about recordings; ``clock`` (UTC) dates them. The recording
    service's background work starts with ``app[RECORDINGS].start()`` (the server does it).
    """
    app = web.Application(middlewares=[error_pages], client_max_size=MAX_BODY)
    app[CONFIG] = config
    app[MEETINGS] = meetings
    rooms = Rooms(config.media.max_participants, meetings.clock)
    signaling = app[SIGNALING] = Signaling(rooms, sfu or Sfu(config.media), config.media, meetings)
    service = app[RECORDINGS] = RecordingService(
        config, meetings.store, signaling.sfu, config.server.public_url, notifier=notifier,
        occupancy=signaling.occupancy, names=signaling.names, **({"clock": clock} if clock else {}))
    signaling.attach_recordings(service)
    app.on_shutdown.append(close_all)
    app.on_cleanup.append(_close_recordings)
    app[MINT_LIMIT] = KeyedLimiter(MINTS_PER_SECOND, MINT_BURST)
    app.on_response_prepare.append(add_security_headers)
    app.router.add_get("/", pages.home)
    app.router.add_get("/healthz", pages.healthz)
    app.router.add_get("/m/{meeting_id}", pages.meeting_page)
    app.router.add_get("/m/{meeting_id}/ws", meeting_socket)
    app.router.add_post("/api/meetings", api.create_meeting)
    recordings.add_routes(app)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    return app


async def _close_recordings(app: web.Application) -> None:
    await app[RECORDINGS].close()
