"""Typed keys for what the application holds, shared by its handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from meeting.config import Config
from meeting.service import MeetingService

from .ratelimit import KeyedLimiter

if TYPE_CHECKING:
    from .meeting_socket import Signaling

CONFIG = web.AppKey("config", Config)
MEETINGS = web.AppKey("meetings", MeetingService)
SIGNALING: web.AppKey["Signaling"] = web.AppKey("signaling")
MINT_LIMIT = web.AppKey("mint_limit", KeyedLimiter)
