"""One meeting's session with no sockets, for the tests of what people do in it.

Messages go in as text through :class:`Sessions`, as a socket's would (so the parser's
refusals come back as errors); what comes out lands on list-backed channels that check every
message against the server's schema.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from typing import Any

from meeting.events import Bus
from meeting.models import Meeting, Origin
from meeting.recording.service import RecordingStatus
from meeting.session.context import SessionContext
from meeting.session.host import Sessions
from meeting.session.limits import ServerLimits
from meeting.session.room import Participant
from meeting.session.session import MeetingSession
from bench.fake_sfu import FakeSfu
from tests.meeting.test_session import HOST_KEY, Hosts, ListChannel


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
    """One connection to the meeting, speaking the protocol as text, as a page would."""

    def __init__(self, kit: "Kit", conn_id: str) -> None:
        self.kit = kit
        self.conn_id = conn_id
        self.channel = ListChannel()
        self.id = ""  # participant id once welcomed

    async def send(self, message: dict[str, Any]) -> None:
        await self.kit.sessions.receive(self.conn_id, json.dumps(message))

    async def join(self, name: str, **fields: Any) -> dict[str, Any]:
        """Ask to join; the welcome (empty when not let in)."""
        await self.send({"type": "join", "name": name, **fields})
        welcome = self.of("welcome")
        if welcome:
            self.id = welcome[-1]["you"]["id"]
        return welcome[-1] if welcome else {}

    async def leave(self) -> None:
        """The connection drops."""
        await self.kit.sessions.disconnect(self.conn_id)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.channel.of(kind)

    def last(self, kind: str) -> dict[str, Any]:
        found = self.of(kind)
        assert found, f"no {kind} among {[m['type'] for m in self.channel.messages]}"
        return found[-1]

    def error(self) -> str:
        return str(self.last("error")["code"])


class Kit:
    """Sessions for one meeting (plain or end-to-end encrypted), and people who connect to it."""

    def __init__(self, e2ee: bool = False, recordings: bool = False) -> None:
        self.sfu = FakeSfu()
        self.meeting = Meeting("k" * 22, "Board", datetime.now(timezone.utc), Origin("web"), e2ee)
        self.sessions = Sessions(SessionContext(
            sfu=self.sfu, meetings=Hosts(), bus=Bus(),
            recordings=FakeRecordings() if recordings else None,  # type: ignore[arg-type]
            ice_servers=lambda: [], capacity=10, clock=lambda: datetime.now(timezone.utc),
            limits=ServerLimits(max_meetings=2, max_people=20),
        ))
        self._ids = itertools.count(1)

    @property
    def session(self) -> MeetingSession:
        session = self.sessions.session(self.meeting.id)
        assert session is not None, "nobody is connected"
        return session

    async def connect(self) -> Person:
        person = Person(self, f"conn{next(self._ids)}")
        await self.sessions.connect(self.meeting, person.conn_id, "192.0.2.1", person.channel)
        return person

    async def joined(self, name: str, host: bool = False, **fields: Any) -> Person:
        person = await self.connect()
        welcome = await person.join(name, **({"host_key": HOST_KEY} if host else {}), **fields)
        assert welcome, person.channel.messages
        return person

    def participant(self, person: Person) -> Participant:
        return self.session.room.participants[person.id]

    async def close(self) -> None:
        await self.sessions.close()
