"""One live meeting and its one owner: presence, lobby, media, host actions, chat, recording.

A :class:`MeetingSession` exists while anyone is connected to a meeting. Its inputs are
what participants' connections ask (:mod:`meeting.session.messages`: join, answer,
candidate, chat, host actions...), plus a few commands from the server (stop recording,
a recording is ready, shut down). Its outputs are messages to connections, through each
one's :class:`Channel`, and events on the bus (who is present, for the chat bots).

Inputs are handled one at a time (an asyncio lock): a host removing someone while they
are still joining, or an admit racing a leave, simply happen in some order. Nothing here
knows websockets or HTTP; the websocket handler only translates frames.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import Any

from meeting import ids
from meeting.logcontext import bind_meeting
from meeting.logfmt import kv
from meeting.media.offer import CandidateError, SdpError
from meeting.media.sfu import MediaRoom
from meeting.models import Meeting
from meeting.ratelimit import KeyedLimiter
from meeting.recording.service import STOP_EMPTY, STOP_HOST, STOP_SHUTDOWN, RecordingStatus
from meeting.session import messages as msg
from meeting.session.actions import MeetingActions
from meeting.session.setup import ConnectionSetup
from meeting.session.asks import MuteAsks
from meeting.session.audience import Audience
from meeting.session.conn import CLOSED, JOINED, NEW, WAITING, WATCHING, Channel, Conn
from meeting.session.context import SessionContext
from meeting.session.messages import (
    Answer, Candidate, Chat, ClientMessage, Hand, HostAction, Join, Leave, MediaState, MuteAnswer, Ping,
    Publish, React, SignalingError, VideoSizes, Watch, reply,
)
from meeting.session.notices import (
    knocking_message, lobby_message, presence, status_message, waiting_message, welcome_message,
)
from meeting.session.resume import LeftBehind, ResumeTokens
from meeting.session.room import Ended, LobbyFull, Participant, Room, RoomEvent, RoomFull

log = logging.getLogger(__name__)

# Knocks on a locked meeting, per client address: a person, not a flood of lobby entries.
KNOCKS_PER_SECOND = 0.2
KNOCK_BURST = 3.0
# People looking at the pre-join screen of one meeting, told its status as it changes.
MAX_WATCHERS = 100

class MeetingSession(MeetingActions, ConnectionSetup):
    """The live state of one meeting, and everything that changes it."""

    def __init__(self, meeting: Meeting, context: SessionContext, carried: LeftBehind | None = None) -> None:
        self.meeting = meeting
        self.id = meeting.id
        self.context = context
        self.room = Room(meeting.id, context.capacity, context.clock, lobby_capacity=context.max_waiting)
        self.media: MediaRoom = context.sfu.open(meeting.id)
        self.people = Audience()
        self.conns = self.people.conns
        self._joined = self.people.joined
        self._lobby = self.people.lobby
        self._resume = ResumeTokens()
        self._entered: list[tuple[Conn, Participant]] = []  # let in; media set up after the lock
        self._knocks = KeyedLimiter(KNOCKS_PER_SECOND, KNOCK_BURST)
        self._asks = MuteAsks()
        # Participants made host by another host (no host key): the role survives a resume.
        self._granted: set[str] = set()
        self._hands_left: dict[str, int] = {}  # raised hands of people who dropped, for their return
        self.recording = RecordingStatus(meeting.id, False, not meeting.e2ee)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        self.finished = asyncio.Event()  # set once its media is closed
        self.left_behind: LeftBehind | None = None  # set when it ends with pages able to come back
        self._unlock_timer: asyncio.TimerHandle | None = None
        if carried is not None:
            self._carry_over(carried)

    @property
    def empty(self) -> bool:
        """No connection left: the session can end."""
        return not self.conns

    def participant_name(self, participant_id: str) -> str:
        """A participant's display name (the recorder labels tracks with it)."""
        participant = self.room.participants.get(participant_id)
        return participant.name if participant else "Guest"

    # --- inputs from connections ---------------------------------------------------------

    async def connect(self, conn_id: str, address: str, channel: Channel) -> bool:
        """A connection opened; it is told nothing until it sends ``join``.

        False when the session ended meanwhile: the caller opens a new one.
        """
        async with self._lock:
            if self.closed:
                return False
            conn = self.conns[conn_id] = Conn(conn_id, address, channel)
            # A socket that never joins, or never connects media, is closed: it holds no place or memory.
            self._deadline(conn, self.context.join_deadline, NEW)
            return True

    async def receive(self, conn_id: str, message: ClientMessage) -> None:
        """Act on one parsed message; a refused one is answered with an error, nothing changed.

        Media set-up for whoever this message let in runs after the lock is released (it
        can take a while, e.g. gathering TURN candidates), so the meeting never waits on it.
        """
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if isinstance(message, (Answer, Candidate)) and conn.media_pending is not None:
            await conn.media_pending.wait()  # the offer it answers went out during set-up
        async with self._lock:
            if conn.state == CLOSED:
                return
            try:
                await self._dispatch(conn, message)
            except SignalingError as exc:
                conn.send(msg.error(exc.code, str(exc)))
            except SdpError as exc:
                conn.send(msg.error("bad-sdp", f"answer refused: {exc}"))
            except CandidateError as exc:
                conn.send(msg.error("bad-candidate", f"candidate refused: {exc}"))
            except Exception:  # a bug must cost one message, never the meeting
                log.exception("signaling message failed %s", kv(meeting=ids.short(self.id)))
                conn.send(msg.error("internal", "the server could not handle that message"))
            entered, self._entered = self._entered, []
        if entered:
            await asyncio.gather(*(self._connect_media(c, p) for c, p in entered))

    async def disconnect(self, conn_id: str) -> None:
        """The connection is gone: leave the lobby, the room and the media (idempotent)."""
        async with self._lock:
            conn = self.conns.get(conn_id)
            if conn is not None:
                await self._drop(conn, barred=False)

    # --- inputs from the server ------------------------------------------------------------

    async def start_recording(self) -> RecordingStatus:
        """Start recording (a host asked over HTTP); raises RecordingRefused with the reason."""
        async with self._lock:
            return await self._start_recording()

    async def stop_recording(self, reason: str = STOP_HOST) -> RecordingStatus:
        """Stop a running recording (a host, low disk, shutdown) and tell everyone why."""
        async with self._lock:
            return await self._stop_recording(reason)

    def refuse(self, conn_id: str, code: str, text: str) -> None:
        """Answer a message that could not even be parsed."""
        conn = self.conns.get(conn_id)
        if conn is not None:
            conn.send(msg.error(code, text))

    async def tell_hosts(self, message: dict[str, Any]) -> None:
        """Send a message to every host present (a recording became ready)."""
        async with self._lock:
            self.people.to_hosts(message)

    async def end(self, code: int, reason: str) -> None:
        """Close every connection (the server is shutting down); the session is over."""
        async with self._lock:
            # Composing a recording cut by a shutdown resumes at the next start.
            await self._stop_recording(STOP_SHUTDOWN)
            for conn in list(self.conns.values()):
                conn.channel.close(code, reason)
                await self._drop(conn, barred=False)
            await self._finish()

    # --- dispatch --------------------------------------------------------------------------

    async def _dispatch(self, conn: Conn, message: ClientMessage) -> None:
        if isinstance(message, Ping):
            conn.send(reply("pong"))
        elif isinstance(message, Join):
            await self._join(conn, message)
        elif isinstance(message, Watch):
            self._watch(conn)
        elif isinstance(message, Leave):
            conn.channel.close(msg.CLOSE_FINAL, "left")
            await self._drop(conn, barred=True)  # left on purpose: nothing to come back to
        elif conn.state != JOINED or conn.participant is None or conn.peer is None:
            raise SignalingError("not-joined", "join first")
        elif isinstance(message, Answer):
            await conn.peer.accept_answer(message.sdp)
        elif isinstance(message, Candidate):
            await conn.peer.add_candidate(message.candidate, message.sdp_mid, message.sdp_mline_index)
        elif isinstance(message, MediaState):
            self._update(conn, audio_muted=message.audio_muted, video_muted=message.video_muted)
        elif isinstance(message, Chat):
            self._chat(conn, message)
        elif isinstance(message, Publish):
            await self._publish(conn, message)
        elif isinstance(message, Hand):
            self._hand(conn, message)
        elif isinstance(message, React):
            self._react(conn, message)
        elif isinstance(message, MuteAnswer):
            self._mute_answer(conn, message)
        elif isinstance(message, VideoSizes):
            conn.peer.set_tiles({(t.participant, t.source): (t.width, t.height) for t in message.tiles})
        elif isinstance(message, HostAction):
            await self._host_action(conn, message)

    # --- joining -------------------------------------------------------------------------

    async def _join(self, conn: Conn, message: Join) -> None:
        if conn.state not in (NEW, WATCHING):
            raise SignalingError("already-joined", "this connection has joined already")
        if message.key_check is not None and not self.meeting.e2ee:
            raise SignalingError("bad-message", "join: key_check is for end-to-end encrypted meetings")
        is_host = await self._check_host_key(conn, message.host_key)
        previous = await self._take_back_place(message.resume)
        # Someone a host handed the role to keeps it when their page comes back from a blip.
        handed = previous is not None and previous in self._granted
        self._granted.discard(previous or "")
        hand = self._hands_left.pop(previous or "", None)  # their place among raised hands
        # A page back from a blip was admitted before: it does not queue in the lobby again.
        if self.room.locked and not (is_host or handed) and previous is None:
            await self._knock(conn, message)
            return
        await self._enter(conn, message, is_host or handed, handed, hand)

    def _watch(self, conn: Conn) -> None:
        """Someone on the pre-join screen: told the status now and whenever it changes."""
        if conn.state != NEW:
            raise SignalingError("already-joined", "watch before joining, once")
        if self.people.watching() >= MAX_WATCHERS:
            raise SignalingError("watchers-full", "Too many people are looking at this meeting right now.")
        conn.state = WATCHING
        if conn.timer is not None:  # no deadline: people read the pre-join screen at their pace
            conn.timer.cancel()
            conn.timer = None
        conn.send(self.people.status_for_newcomer(self.room, self.recording))

    async def _knock(self, conn: Conn, message: Join) -> None:
        """Wait in the lobby of a locked meeting until a host decides."""
        if not self._knocks.take(conn.address):
            # Said as it is: the lobby may be empty, this address knocked too often.
            await self._refuse(conn, "knock-rate-limited",
                               "You asked to join several times in a row. Wait a minute, then try again.")
            return
        try:
            waiting, events = self.room.knock(message.name)
        except LobbyFull:
            await self._refuse(conn, "lobby-full", "Too many people are waiting to join this meeting. Try again later.")
            return
        conn.state, conn.waiting_id, conn.pending = WAITING, waiting.id, message
        self._lobby[waiting.id] = conn
        conn.send(waiting_message(self.room.hosts_present()))
        conn.send(status_message(self.room, self.recording))
        await self._publish_events(events)

    async def _check_host_key(self, conn: Conn, host_key: str | None) -> bool:
        if not host_key:
            return False
        if await self.context.meetings.is_host(self.id, host_key):
            return True
        log.warning("host key refused %s", kv(meeting=ids.short(self.id)))
        conn.send(reply("notice", text="This host link is not valid for this meeting. You join as a guest."))
        return False

    async def _take_back_place(self, token: str | None) -> str | None:
        """A reconnecting page's resume token: the participant id it held, when the token was
        issued here and is still good.

        Tokens live in this session, so one from another meeting is never good here; each
        works once. The page's old connection, if the server has not noticed it died, goes.
        """
        pid = self._resume.take(token, time.monotonic())
        if pid is None:
            return None
        previous = self._joined.get(pid)
        if previous is not None:
            previous.channel.close(msg.CLOSE_FINAL, "replaced")
            await self._drop(previous, barred=False)
        return pid

    async def _enter(self, conn: Conn, message: Join, is_host: bool, handed: bool = False,
                     hand: int | None = None) -> None:
        limits = self.context.limits
        if not limits.take_place():
            await self._refuse(conn, "server-full", "This server is full right now. Try again in a few minutes.")
            return
        displaced = self.room.displaced()
        if displaced is not None and displaced in self._joined:
            await self._time_out(self._joined[displaced], "media")
        try:
            participant, events = self.room.join(
                message.name, message.publish, is_host=is_host, audio_muted=message.audio_muted,
                video_muted=message.video_muted, key_check=message.key_check, hand=hand)
        except RoomFull:
            limits.free_place()
            await self._refuse(conn, "meeting-full", f"This meeting is full ({self.room.capacity} people).")
            return
        conn.state, conn.participant = JOINED, participant
        self._deadline(conn, self.context.media_deadline, JOINED)
        self._joined[participant.id] = conn
        if handed:
            self._granted.add(participant.id)
        log.info("joined %s", kv(meeting=ids.short(self.id), participant=participant.id[:4],
                                 host=is_host, present=len(self.room.participants)))
        conn.send(await self._welcome(participant, is_host))
        if is_host and self.room.lobby:
            conn.send(lobby_message(self.room))
        elif self.room.unattended():
            conn.send(knocking_message(self.room.unattended()))
        await self._publish_events(events)
        conn.media_pending = asyncio.Event()
        self._entered.append((conn, participant))

    async def _refuse(self, conn: Conn, code: str, text: str) -> None:
        conn.send(msg.error(code, text))
        conn.channel.close(msg.CLOSE_FINAL, code)
        await self._drop(conn, barred=False)

    async def _welcome(self, participant: Participant, is_host: bool) -> dict[str, Any]:
        recordings = self.context.recordings
        links = await recordings.links(self.id) if recordings is not None and is_host else None
        return welcome_message(
            participant, self.room, self._resume.issue(participant.id), self.context.ice_servers(),
            self.meeting.e2ee, self.recording if recordings is not None else None, links)

    async def _admit(self, conn: Conn) -> None:
        """Let a lobby guest in (a host decided, or the meeting was unlocked)."""
        if conn.state != WAITING or conn.pending is None:
            return
        self._leave_lobby(conn)
        await self._enter(conn, conn.pending, is_host=False)

    # --- in the meeting ----------------------------------------------------------------------

    async def _close_with(self, conn: Conn, kind: str, text: str, barred: bool) -> None:
        """Tell the browser why, then close its connection for good and drop it."""
        conn.send(reply(kind, message=text))
        conn.channel.close(msg.CLOSE_FINAL, kind)
        await self._drop(conn, barred=barred)

    # --- leaving -------------------------------------------------------------------------

    def _leave_lobby(self, conn: Conn) -> None:
        if conn.waiting_id is not None and self._lobby.get(conn.waiting_id) is conn:
            del self._lobby[conn.waiting_id]
        self._tell(self.room.unknock(conn.waiting_id or ""))
        conn.state = NEW

    async def _drop(self, conn: Conn, barred: bool) -> None:
        """Take a connection out of the lobby, the room and the media; safe to repeat.

        ``barred`` (removed by a host, the meeting ended, left on purpose) forgets the
        participant's resume token; a dropped page keeps it for a grace period (resume.py).
        """
        state, conn.state = conn.state, CLOSED
        self.conns.pop(conn.id, None)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if state == WAITING:
            self._leave_lobby(conn)
            conn.state = CLOSED
        participant = conn.participant
        if state == JOINED and participant is not None:
            pid = participant.id
            if self._joined.get(pid) is conn:
                del self._joined[pid]
            self.context.limits.free_place()
            self._resume.left(pid, time.monotonic(), barred)
            if participant.hand is not None and not barred:
                self._hands_left[pid] = participant.hand
            self._hands_left = {p: h for p, h in self._hands_left.items() if self._resume.knows(p)}
            if barred:
                self._granted.discard(pid)
            for ask in self._asks.gone(pid):
                self._close_ask(ask, "no-answer")
            # The room is told first: whatever the media plane does, nobody stays as a ghost.
            events = self.room.leave(pid)
            try:
                await self.media.leave(pid)
            except Exception:
                log.exception("media leave failed %s", kv(meeting=ids.short(self.id)))
            log.info("left %s", kv(meeting=ids.short(self.id), participant=pid[:4]))
            await self._publish_events(events)
        if self.empty:
            await self._finish()

    async def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        now = time.monotonic()
        until = self._resume.good_until(now)
        if until is not None and (self.room.locked or self._granted):
            self.left_behind = LeftBehind(self.room.locked, self._resume, frozenset(self._granted), until)
        if self._unlock_timer is not None:
            self._unlock_timer.cancel()
        await self._stop_recording(STOP_EMPTY)
        await self.media.close()
        self._asks.close()
        current = asyncio.current_task()
        for task in [t for t in self._tasks if t is not current]:
            task.cancel()
        self.finished.set()

    # --- telling people ------------------------------------------------------------------

    async def _publish_events(self, events: list[RoomEvent]) -> None:
        """Tell the room what changed, the lobby whether a host is here, the bus who is present."""
        self._tell(events)
        self.people.hosts_now(self.room.hosts_present())
        presence_now = presence(self.id, self.room, events)
        if presence_now is not None:
            await self.context.bus.publish(presence_now)
        for event in events:
            if isinstance(event, Ended):
                log.info("meeting ended %s", kv(meeting=ids.short(self.id),
                                                 minutes=round(event.duration.total_seconds() / 60, 1)))
                await self._stop_recording(STOP_EMPTY)
                self._everyone_left()

    def _tell(self, events: list[RoomEvent]) -> None:
        self.people.tell(events, self.room, self.recording)

    def _refresh(self) -> None:
        self.people.refresh(self.room, self.recording)

    def _spawn(self, coroutine: Any) -> None:
        """Run work that must take the lock later (a peer's state callback), holding its task."""
        # Whatever context spawned it (a peer's task, a timer), its lines name this meeting.
        context = contextvars.copy_context()
        context.run(bind_meeting, self.id)
        task = asyncio.get_running_loop().create_task(coroutine, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

