"""What every live session of a process shares: the media plane, stores, bus and settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

from meeting.events import Bus
from meeting.media.sfu import Sfu
from meeting.recording.service import RecordingService


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
    capacity: int
    clock: Callable[[], datetime]
