"""Who is connected to one meeting, in which part of it, and how each part is told things.

The session decides; the audience delivers. It holds the connections by id, the joined ones
by participant id and the lobby by waiting id, and remembers what the pre-join and lobby
screens and the room were last told, so each change is sent once and nothing is sent when
nothing changed. No I/O of its own: every message leaves through a connection's channel.
"""

from __future__ import annotations

from typing import Any

from meeting.recording.service import RecordingStatus
from meeting.session.conn import WAITING, WATCHING, Conn
from meeting.session.notices import HOSTS, knocking_message, notices, status_message, waiting_message
from meeting.session.room import Room, RoomEvent, Updated


class Audience:
    """The connections of one meeting, by role, and what each role was last told."""

    def __init__(self) -> None:
        self.conns: dict[str, Conn] = {}
        self.joined: dict[str, Conn] = {}  # participant id -> connection
        self.lobby: dict[str, Conn] = {}  # waiting id -> connection
        self._status: dict[str, Any] | None = None  # what watchers and the lobby were told last
        self._knocking = 0  # what the room was told last: people waiting whom nobody can let in
        self._hosts_present = False  # what the lobby was told last

    def broadcast(self, message: dict[str, Any], skip: str | None = None) -> None:
        """Send to everyone in the meeting but participant ``skip``."""
        for pid, conn in self.joined.items():
            if pid != skip:
                conn.send(message)

    def to_hosts(self, message: dict[str, Any]) -> None:
        """Send to every host in the meeting."""
        for conn in self.joined.values():
            if conn.participant is not None and conn.participant.is_host:
                conn.send(message)

    def watching(self) -> int:
        """How many connections sit on the pre-join screen."""
        return sum(c.state == WATCHING for c in self.conns.values())

    def status_for_newcomer(self, room: Room, recording: RecordingStatus) -> dict[str, Any]:
        """The status to send someone who starts watching or waiting now."""
        # Every change since the first watcher came went to all of them: this is what they know.
        self._status = status_message(room, recording)
        return self._status

    def tell(self, events: list[RoomEvent], room: Room, recording: RecordingStatus) -> None:
        """Tell the room what these events changed, then whoever is deciding whether to join."""
        for event in events:
            # A connection holds its participant's record: keep it the room's current one.
            if isinstance(event, Updated) and event.participant.id in self.joined:
                self.joined[event.participant.id].participant = event.participant
        for notice in notices(events):
            if notice.audience == HOSTS:
                self.to_hosts(notice.message)
            else:
                self.broadcast(notice.message, skip=notice.skip)
        self.refresh(room, recording)

    def refresh(self, room: Room, recording: RecordingStatus) -> None:
        """Tell the pre-join and lobby screens the meeting's status, and the people in it how
        many wait with no host to let them in, when either changed."""
        status = status_message(room, recording)
        if status != self._status:
            self._status = status
            for conn in self.conns.values():
                if conn.state in (WATCHING, WAITING):
                    conn.send(status)
        knocking = room.unattended()
        if knocking != self._knocking:
            self._knocking = knocking
            self.broadcast(knocking_message(knocking))

    def hosts_now(self, hosts_present: bool) -> None:
        """Whoever waits in the lobby learns whether anyone can let them in, when that changed."""
        if hosts_present != self._hosts_present:
            self._hosts_present = hosts_present
            for waiting in self.lobby.values():
                waiting.send(waiting_message(hosts_present))
