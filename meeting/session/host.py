"""Every live meeting session of this process, and the connections that reach them.

The websocket handler (or, later, a pipe from another process) talks to :class:`Sessions`
by connection id: a connection opens on a meeting, sends text frames, and closes. A
session is made when the first connection to a meeting arrives and forgotten when the
last one has gone. Server-side commands (recording over HTTP, low disk, shutdown) reach a
session by meeting id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from meeting.events import RecordingReady
from meeting.models import Meeting
from meeting.recording.service import STOP_DISK, STOP_HOST, RecordingRefused, RecordingStatus
from meeting.session.context import SessionContext
from meeting.session.messages import CLOSE_FINAL, CLOSE_GOING_AWAY, SignalingError, error, parse_message, reply
from meeting.session.conn import Channel
from meeting.session.resume import LeftBehind
from meeting.session.session import MeetingSession

log = logging.getLogger(__name__)

DISK_CHECK_INTERVAL = 10.0  # seconds between free-space checks while anything records


class LiveMeetings(Protocol):
    """What the web side asks of live meetings, wherever they run (:class:`Sessions` here,
    or :class:`~meeting.workers.pool.WorkerPool` across worker processes)."""

    async def start(self) -> None: ...

    async def connect(self, meeting: Meeting, conn_id: str, address: str, channel: Channel) -> None: ...

    async def receive(self, conn_id: str, text: str | bytes) -> None: ...

    async def disconnect(self, conn_id: str) -> None: ...

    async def recording(self, meeting: Meeting, start: bool) -> RecordingStatus: ...

    async def watch_disk(self) -> None: ...

    async def close(self) -> None: ...

    def session(self, meeting_id: str) -> MeetingSession | None: ...

    def stats(self) -> dict[str, Any]: ...


class Sessions:
    """The live sessions of this process, by meeting and by connection."""

    def __init__(self, context: SessionContext) -> None:
        self.context = context
        self.disk_check_interval = DISK_CHECK_INTERVAL
        self._sessions: dict[str, MeetingSession] = {}
        self._by_conn: dict[str, MeetingSession] = {}
        # Ended sessions' lock and resume tokens, for pages coming back after everyone dropped.
        self._left_behind: dict[str, LeftBehind] = {}
        self._closed = False
        context.bus.subscribe(RecordingReady, self._recording_ready)

    async def start(self) -> None:
        """Nothing to start: sessions are made as connections arrive."""

    def session(self, meeting_id: str) -> MeetingSession | None:
        """The meeting's live session, if anyone is connected."""
        session = self._sessions.get(meeting_id)
        return session if session is not None and not session.closed else None

    def all(self) -> list[MeetingSession]:
        return [s for s in self._sessions.values() if not s.closed]

    # --- connections ---------------------------------------------------------------------

    async def connect(self, meeting: Meeting, conn_id: str, address: str, channel: Channel) -> None:
        """A connection to ``meeting`` opened (its session is made if needed)."""
        if self._closed:
            channel.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        while True:
            session = self._sessions.get(meeting.id)
            if session is not None and session.closed:
                # The last person just left: its media closes before the next session opens.
                await session.finished.wait()
                self._retire(session)
                continue
            if session is None:
                if len(self._sessions) >= self.context.limits.max_meetings:
                    channel.send(error("server-full", "This server is full right now. Try again in a few minutes."))
                    channel.close(CLOSE_FINAL, "server full")
                    return
                session = self._sessions[meeting.id] = MeetingSession(
                    meeting, self.context, self._carried(meeting.id))
            if await session.connect(conn_id, address, channel):
                self._by_conn[conn_id] = session
                return

    async def receive(self, conn_id: str, text: str | bytes) -> None:
        """One text frame from a connection."""
        session = self._by_conn.get(conn_id)
        if session is None:
            return
        try:
            message = parse_message(text)
        except SignalingError as exc:
            session.refuse(conn_id, exc.code, str(exc))
            return
        # A transport may be cancelled mid-message (its socket closed); the session never is.
        await asyncio.shield(self._receive(session, conn_id, message))

    async def _receive(self, session: MeetingSession, conn_id: str, message: Any) -> None:
        await session.receive(conn_id, message)
        self._forget(conn_id, session)

    async def disconnect(self, conn_id: str) -> None:
        """The connection closed (idempotent)."""
        session = self._by_conn.get(conn_id)
        if session is not None:
            await asyncio.shield(self._disconnect(session, conn_id))

    async def _disconnect(self, session: MeetingSession, conn_id: str) -> None:
        await session.disconnect(conn_id)
        self._forget(conn_id, session)

    def _forget(self, conn_id: str, session: MeetingSession) -> None:
        if conn_id not in session.conns:
            self._by_conn.pop(conn_id, None)
        if session.closed:
            self._retire(session)

    def _retire(self, session: MeetingSession) -> None:
        """Forget an ended session, keeping what it left for pages coming back."""
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            if session.left_behind is not None:
                self._left_behind[session.id] = session.left_behind

    def _carried(self, meeting_id: str) -> LeftBehind | None:
        """What the meeting's last session left for pages coming back, while still good."""
        now = time.monotonic()
        for other, left in list(self._left_behind.items()):
            if left.until <= now:
                del self._left_behind[other]
        return self._left_behind.pop(meeting_id, None)

    # --- commands from the server --------------------------------------------------------

    async def recording(self, meeting: Meeting, start: bool) -> RecordingStatus:
        """Start or stop a meeting's recording (a host asked over HTTP).

        Raises RecordingRefused, e.g. when nobody is in the meeting.
        """
        session = self.session(meeting.id)
        if session is None:
            if start:
                raise RecordingRefused("empty", "Nobody is in the meeting: recording starts once people have joined.")
            return RecordingStatus(meeting.id, False, not meeting.e2ee)
        return await (session.start_recording() if start else session.stop_recording(STOP_HOST))

    async def _recording_ready(self, event: RecordingReady) -> None:
        session = self.session(event.meeting_id)
        if session is not None:
            await session.tell_hosts(reply("recording-ready", id=event.recording_id, url=event.url,
                                           started_at=event.started_at, delete_on=event.delete_on))

    async def watch_disk(self) -> None:
        """Stop every recording while the recordings folder is below its free-space floor."""
        recordings = self.context.recordings
        if recordings is None:
            return
        while True:
            await asyncio.sleep(self.disk_check_interval)
            recording = [s for s in self.all() if s.recording.active]
            if recording and await recordings.disk_low():
                log.warning("recordings stopped for disk space (%d)", len(recording))
                for session in recording:
                    await session.stop_recording(STOP_DISK)

    async def close(self) -> None:
        """Tell every browser the server is going away, stop recordings, close the media."""
        self._closed = True
        for session in list(self._sessions.values()):
            await session.end(CLOSE_GOING_AWAY, "server shutting down")
        self._sessions.clear()
        self._by_conn.clear()

    def stats(self) -> dict[str, Any]:
        """Live meetings, people in them and people waiting in lobbies."""
        live = self.all()
        return {"meetings": len(live),
                "participants": sum(len(s.room.participants) for s in live),
                "recording": sum(1 for s in live if s.recording.active),
                "waiting": sum(len(s.room.lobby) for s in live),
                "connections": len(self._by_conn)}
