"""What every live session of a process shares: the media plane, stores, bus and settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

from meeting.config import Config
from meeting.events import Bus
from meeting.media.sfu import Sfu
from meeting.recording.service import RecordingService
from meeting.session.limits import ServerLimits


class HostKeys(Protocol):
    """Checks a host key (the meeting service does, against the store)."""

    async def is_host(self, meeting_id: str, host_key: str | None) -> bool: ...


@dataclass(frozen=True)
class SessionContext:
    """The services a :class:`~meeting.session.session.MeetingSession` uses, built once."""

    sfu: Sfu
    meetings: HostKeys
    bus: Bus
    recordings: RecordingService | None
    # The STUN/TURN servers for one joining page, in RTCIceServer form.
    ice_servers: Callable[[], list[dict[str, Any]]]
    capacity: int  # people per meeting
    clock: Callable[[], datetime]
    limits: ServerLimits  # meetings and people over the whole server
    max_waiting: int = 50  # people in one meeting's lobby


def ice_servers_for(config: Config) -> Callable[[], list[dict[str, Any]]]:
    """The STUN/TURN servers each joining page is given, in RTCIceServer form."""
    servers = [
        {"urls": list(s.urls), **({"username": s.username, "credential": s.credential} if s.username else {})}
        for s in config.media.ice_servers
    ]
    return lambda: [dict(s) for s in servers]


def context_for(config: Config, *, sfu: Sfu, meetings: HostKeys, bus: Bus,
                recordings: RecordingService | None, clock: Callable[[], datetime]) -> SessionContext:
    """The context every session of one process shares, from the configuration."""
    return SessionContext(
        sfu=sfu, meetings=meetings, bus=bus, recordings=recordings, ice_servers=ice_servers_for(config),
        capacity=config.media.max_participants, clock=clock,
        limits=ServerLimits(config.media.max_meetings, config.media.max_people),
        max_waiting=config.media.max_waiting)
