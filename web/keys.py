"""Typed keys for what the application holds, shared by its handlers."""

from __future__ import annotations

from aiohttp import web

from meeting.config import Config
from meeting.ratelimit import Limiter
from meeting.recording.service import RecordingService
from meeting.service import MeetingService
from meeting.session.host import LiveMeetings

from .limits import SocketLimits
from .poster import PosterCache

CONFIG = web.AppKey("config", Config)
MEETINGS = web.AppKey("meetings", MeetingService)
SESSIONS = web.AppKey("sessions", LiveMeetings)
RECORDINGS = web.AppKey("recordings", RecordingService)
MINT_LIMIT = web.AppKey("mint_limit", Limiter)  # type: ignore[type-abstract]
SOCKET_LIMITS = web.AppKey("socket_limits", SocketLimits)
POSTERS = web.AppKey("posters", PosterCache)
