"""A meeting session with no sockets: a fake media plane, channels that keep what they get."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from typing import Any

from meeting.events import Bus
from meeting.models import Meeting, Origin
from meeting.recording.service import RecordingStatus
from meeting.session.context import SessionContext
from meeting.session.limits import ServerLimits
from meeting.session.messages import parse_message
from meeting.session.session import MeetingSession
from tests.fakes import FakeSfu

HOST_KEY = "the-host-key"


class ListChannel:
    """A connection's channel as a list: every message, and the close, kept in order."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send(self, message: dict[str, Any]) -> None:
        assert self.closed is None, f"{message['type']} sent after the close"
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind]

    def last(self, kind: str) -> dict[str, Any]:
        found = self.of(kind)
        assert found, f"no {kind} among {[m['type'] for m in self.sent]}"
        return found[-1]

    def take(self) -> list[dict[str, Any]]:
        """Everything sent since the last take."""
        sent, self.sent = self.sent, []
        return sent


class HostKeys:
    async def is_host(self, meeting_id: str, host_key: str | None) -> bool:
        return host_key == HOST_KEY


class FakeRecordings:
    """Starts and stops at once; hosts' links are one fixed recording."""

    LINK = {"id": "r1", "url": "/r/r1", "started_at": "2026-05-01T09:00:00+00:00", "delete_on": "2026-05-31"}

    async def start_recording(self, meeting: Meeting, media: Any, names: Any) -> RecordingStatus:
        return RecordingStatus(meeting.id, True, True, since=datetime.now(timezone.utc))

    async def stop_recording(self, meeting_id: str, reason: str = "host") -> RecordingStatus:
        return RecordingStatus(meeting_id, False, True, reason=reason)

    async def links(self, meeting_id: str) -> list[dict[str, str]]:
        return [dict(self.LINK)]


class Person:
    """One connection to the session, speaking the protocol as text, as a page would."""

    def __init__(self, session: MeetingSession, conn_id: str) -> None:
        self.session = session
        self.conn_id = conn_id
        self.channel = ListChannel()
        self.id = ""  # participant id once welcomed

    async def send(self, message: dict[str, Any]) -> None:
        await self.session.receive(self.conn_id, parse_message(json.dumps(message)))

    async def join(self, name: str, **fields: Any) -> dict[str, Any]:
        await self.send({"type": "join", "name": name, **fields})
        welcome = self.channel.of("welcome")
        if welcome:
            self.id = welcome[-1]["you"]["id"]
        return welcome[-1] if welcome else {}

    async def leave(self) -> None:
        await self.session.disconnect(self.conn_id)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.channel.of(kind)

    def last(self, kind: str) -> dict[str, Any]:
        return self.channel.last(kind)

    def error(self) -> str:
        return str(self.channel.last("error")["code"])


class Kit:
    """A session for one meeting, and people who connect to it."""

    def __init__(self, e2ee: bool = False, recordings: bool = False, capacity: int = 10) -> None:
        self.sfu = FakeSfu()
        self.meeting = Meeting("meeting-id-0123456789", "Board", datetime.now(timezone.utc), Origin("web"), e2ee)
        self.context = SessionContext(
            sfu=self.sfu, meetings=HostKeys(), bus=Bus(),
            recordings=FakeRecordings() if recordings else None,  # type: ignore[arg-type]
            ice_servers=lambda: [], capacity=capacity, clock=lambda: datetime.now(timezone.utc),
            limits=ServerLimits(max_meetings=10, max_people=100),
        )
        self.session = MeetingSession(self.meeting, self.context)
        self._ids = itertools.count(1)

    async def connect(self) -> Person:
        person = Person(self.session, f"conn{next(self._ids)}")
        assert await self.session.connect(person.conn_id, "192.0.2.1", person.channel)
        return person

    async def joined(self, name: str, host: bool = False, **fields: Any) -> Person:
        person = await self.connect()
        welcome = await person.join(name, **({"host_key": HOST_KEY} if host else {}), **fields)
        assert welcome, person.channel.sent
        return person

    def participant(self, person: Person) -> Any:
        return self.session.room.participants[person.id]

    async def close(self) -> None:
        for conn_id in list(self.session.conns):
            await self.session.disconnect(conn_id)
