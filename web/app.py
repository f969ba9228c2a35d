"""The aiohttp application factory: routes, middlewares and what they share."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from meeting.config import Config
from meeting.room import Rooms
from meeting.service import MeetingService
from meeting.sfu import Sfu

from . import api, pages
from .errors import error_pages
from .keys import CONFIG, MEETINGS, SIGNALING
from .meeting_socket import Signaling, close_all, meeting_socket
from .security import add_security_headers

STATIC = Path(__file__).parent / "static"
# Requests are small JSON or form bodies; anything bigger is refused before it is read.
MAX_BODY = 64 * 1024


def create_app(config: Config, meetings: MeetingService, sfu: Sfu | None = None) -> web.Application:
    """Build the web application around an opened store's meeting service.

    ``sfu`` defaults to one made from ``config.media``; tests pass their own.
    """
    app = web.Application(middlewares=[error_pages], client_max_size=MAX_BODY)
    app[CONFIG] = config
    app[MEETINGS] = meetings
    rooms = Rooms(config.media.max_participants, meetings.clock)
    app[SIGNALING] = Signaling(rooms, sfu or Sfu(config.media), config.media, meetings)
    app.on_shutdown.append(close_all)
    app.on_response_prepare.append(add_security_headers)
    app.router.add_get("/", pages.home)
    app.router.add_get("/healthz", pages.healthz)
    app.router.add_get("/m/{meeting_id}", pages.meeting_page)
    app.router.add_get("/m/{meeting_id}/ws", meeting_socket)
    app.router.add_post("/api/meetings", api.create_meeting)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    return app
