"""Typed keys for what the application holds, shared by its handlers."""

from __future__ import annotations

from aiohttp import web

from meeting.config import Config
from meeting.service import MeetingService

CONFIG = web.AppKey("config", Config)
MEETINGS = web.AppKey("meetings", MeetingService)
