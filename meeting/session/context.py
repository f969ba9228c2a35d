"""What every live session of a process shares: the media plane, stores, bus and settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

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
