"""What every live session of a process shares: the media plane, stores, bus and settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

from meeting.config import Config
from meeting.events import Bus
from meeting.media.sfu import Sfu
from meeting.media.turn import TurnCredentials
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
    # Seconds a connection has to ask to join, then to connect its media (else it is closed).
    join_deadline: float = 10.0
    media_deadline: float = 20.0


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


def context_for(config: Config, *, sfu: Sfu, meetings: HostKeys, bus: Bus,
                recordings: RecordingService | None, clock: Callable[[], datetime]) -> SessionContext:
    """The context every session of one process shares, from the configuration."""
    return SessionContext(
        sfu=sfu, meetings=meetings, bus=bus, recordings=recordings, ice_servers=ice_servers_for(config, sfu.turn),
        capacity=config.media.max_participants, clock=clock,
        limits=ServerLimits(config.media.max_meetings, config.media.max_people),
        max_waiting=config.media.max_waiting, join_deadline=config.media.join_deadline,
        media_deadline=config.media.media_deadline)
