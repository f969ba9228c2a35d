"""The aiohttp application: routes, middlewares, and the services its handlers use."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from meeting.config import Config
from meeting.ratelimit import Limiter, LocalLimiter
from meeting.recording.service import RecordingService
from meeting.service import MeetingService
from meeting.session.host import LiveMeetings

from . import api, pages, recordings
from .bodydeadline import body_deadline
from .errors import error_pages
from .keys import CONFIG, MEETINGS, MINT_LIMIT, RECORDINGS, SESSIONS, SOCKET_LIMITS
from .logsetup import log_context
from .limits import MINT_BURST, MINTS_PER_SECOND, SocketLimits
from .meeting_socket import meeting_socket
from .security import add_security_headers

STATIC = Path(__file__).parent / "static"
# Requests are small JSON or form bodies; anything bigger is refused before it is read.
MAX_BODY = 64 * 1024


def create_app(config: Config, meetings: MeetingService, sessions: LiveMeetings,
               recording_service: RecordingService, *, mint_limit: Limiter | None = None,
               socket_limits: SocketLimits | None = None) -> web.Application:
    """The web application over services built by the composition root (``web.server``).

    On shutdown it closes every live session, so browsers hear the server is going away
    before their sockets drop.
    """
    # The body deadline sits inside the error pages, which render its 408 and 413.
    app = web.Application(middlewares=[log_context, error_pages, body_deadline(config.server.body_timeout)],
                          client_max_size=MAX_BODY)
    app[CONFIG] = config
    app[MEETINGS] = meetings
    app[SESSIONS] = sessions
    app[RECORDINGS] = recording_service
    # Per client address; in a cluster the composition root passes limits all nodes share.
    app[MINT_LIMIT] = mint_limit or LocalLimiter(MINTS_PER_SECOND, MINT_BURST)
    app[SOCKET_LIMITS] = socket_limits or SocketLimits()
    app.on_shutdown.append(_close_sessions)
    app.on_response_prepare.append(add_security_headers)
    app.router.add_get("/", pages.home)
    app.router.add_get("/healthz", pages.healthz)
    app.router.add_get("/m/{meeting_id}", pages.meeting_page)
    app.router.add_get("/m/{meeting_id}/ws", meeting_socket)
    app.router.add_post("/api/meetings", api.create_meeting)
    recordings.add_routes(app)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    return app


async def _close_sessions(app: web.Application) -> None:
    await app[SESSIONS].close()
