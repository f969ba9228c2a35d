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
from datetime import datetime, timezone
from typing import Any, Callable

from meeting import ids
from meeting.logcontext import bind_meeting
from meeting.logfmt import kv
from meeting.media.peer import CandidateError, Offer, SdpError
from meeting.media.sfu import MediaRoom, RoomFullError
from meeting.models import Meeting
from meeting.ratelimit import KeyedLimiter
from meeting.recording.service import (
    STOP_DISK, STOP_EMPTY, STOP_HOST, STOP_SHUTDOWN, RecordingRefused, RecordingStatus,
)
from meeting.session import messages as msg
from meeting.session.conn import CLOSED, JOINED, NEW, WAITING, Channel, Conn
from meeting.session.context import SessionContext
from meeting.session.messages import (
    Answer, Candidate, Chat, ClientMessage, HostAction, Join, Leave, MediaState, Ping, Publish,
    SignalingError, reply,
)
from meeting.session.notices import HOSTS, lobby_message, notices, presence, recording_message
from meeting.session.resume import ResumeTokens
from meeting.session.room import Ended, LobbyFull, Participant, Room, RoomEvent, RoomFull

log = logging.getLogger(__name__)

# Knocks on a locked meeting, per client address: a person, not a flood of lobby entries.
KNOCKS_PER_SECOND = 0.2
KNOCK_BURST = 3.0

class MeetingSession:
    """The live state of one meeting, and everything that changes it."""

    def __init__(self, meeting: Meeting, context: SessionContext) -> None:
        self.meeting = meeting
        self.id = meeting.id
        self.context = context
        self.room = Room(meeting.id, context.capacity, context.clock, lobby_capacity=context.max_waiting)
        self.media: MediaRoom = context.sfu.open(meeting.id)
        self.conns: dict[str, Conn] = {}
        self._joined: dict[str, Conn] = {}  # participant id -> connection
        self._lobby: dict[str, Conn] = {}  # waiting id -> connection
        self._resume = ResumeTokens()
        self._entered: list[tuple[Conn, Participant]] = []  # let in; media set up after the lock
        self._knocks = KeyedLimiter(KNOCKS_PER_SECOND, KNOCK_BURST)
        self._hosts_present = False
        self.recording = RecordingStatus(meeting.id, False, not meeting.e2ee)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        self.finished = asyncio.Event()  # set once its media is closed

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
            self._to_hosts(message)

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
        elif isinstance(message, Leave):
            conn.channel.close(msg.CLOSE_FINAL, "left")
            await self._drop(conn, barred=False)
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
        elif isinstance(message, HostAction):
            await self._host_action(conn, message)

    # --- joining -------------------------------------------------------------------------

    async def _join(self, conn: Conn, message: Join) -> None:
        if conn.state != NEW:
            raise SignalingError("already-joined", "this connection has joined already")
        is_host = await self._check_host_key(conn, message.host_key)
        resumed = await self._take_back_place(message.resume)
        # A page back from a blip was admitted before: it does not queue in the lobby again.
        if self.room.locked and not is_host and not resumed:
            await self._knock(conn, message)
            return
        await self._enter(conn, message, is_host)

    async def _knock(self, conn: Conn, message: Join) -> None:
        """Wait in the lobby of a locked meeting until a host decides."""
        try:
            if not self._knocks.take(conn.address):
                raise LobbyFull(self.id)
            waiting, events = self.room.knock(message.name)
        except LobbyFull:
            await self._refuse(conn, "lobby-full", "Too many people are waiting to join this meeting. Try again later.")
            return
        conn.state, conn.waiting_id, conn.pending = WAITING, waiting.id, message
        self._lobby[waiting.id] = conn
        conn.send(_waiting_message(self.room.hosts_present()))
        await self._publish_events(events)

    async def _check_host_key(self, conn: Conn, host_key: str | None) -> bool:
        if not host_key:
            return False
        if await self.context.meetings.is_host(self.id, host_key):
            return True
        log.warning("host key refused %s", kv(meeting=ids.short(self.id)))
        conn.send(reply("notice", text="This host link is not valid for this meeting. You join as a guest."))
        return False

    async def _take_back_place(self, token: str | None) -> bool:
        """A reconnecting page's resume token: True when it was issued here and is still good.

        Tokens live in this session, so one from another meeting is never good here; each
        works once. The page's old connection, if the server has not noticed it died, goes.
        """
        pid = self._resume.take(token, time.monotonic())
        if pid is None:
            return False
        previous = self._joined.get(pid)
        if previous is not None:
            previous.channel.close(msg.CLOSE_FINAL, "replaced")
            await self._drop(previous, barred=False)
        return True

    async def _enter(self, conn: Conn, message: Join, is_host: bool) -> None:
        limits = self.context.limits
        if not limits.take_place():
            await self._refuse(conn, "server-full", "This server is full right now. Try again in a few minutes.")
            return
        displaced = self.room.displaced()
        if displaced is not None and displaced in self._joined:
            await self._time_out(self._joined[displaced], "media")
        try:
            participant, events = self.room.join(message.name, message.publish, is_host=is_host)
        except RoomFull:
            limits.free_place()
            await self._refuse(conn, "meeting-full", f"This meeting is full ({self.room.capacity} people).")
            return
        conn.state, conn.participant = JOINED, participant
        self._deadline(conn, self.context.media_deadline, JOINED)
        self._joined[participant.id] = conn
        log.info("joined %s", kv(meeting=ids.short(self.id), participant=participant.id[:4],
                                 host=is_host, present=len(self.room.participants)))
        conn.send(await self._welcome(participant, is_host))
        if is_host and self.room.lobby:
            conn.send(lobby_message(self.room))
        await self._publish_events(events)
        conn.media_pending = asyncio.Event()
        self._entered.append((conn, participant))

    async def _refuse(self, conn: Conn, code: str, text: str) -> None:
        conn.send(msg.error(code, text))
        conn.channel.close(msg.CLOSE_FINAL, code)
        await self._drop(conn, barred=False)

    def _deadline(self, conn: Conn, seconds: float, state: str) -> None:
        """Close ``conn`` if it is still ``state`` (not joined; media not connected) by then."""
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = asyncio.get_running_loop().call_later(
            seconds, lambda: self._spawn(self._expire(conn, state)))

    async def _expire(self, conn: Conn, state: str) -> None:
        async with self._lock:
            if conn.state != state or (state == JOINED and conn.participant is not None
                                       and conn.participant.id not in self.room.pending):
                return
            await self._time_out(conn, "join" if state == NEW else "media")

    async def _time_out(self, conn: Conn, what: str) -> None:
        """Close a connection that has not joined, or not connected its media, in time."""
        log.info("connection timed out %s", kv(meeting=ids.short(self.id), waiting_for=what))
        conn.send(msg.error(f"{what}-timeout", "The connection took too long to set up. Reload to try again."))
        conn.channel.close(msg.CLOSE_RETRY, f"{what} timeout")
        await self._drop(conn, barred=False)

    async def _connect_media(self, conn: Conn, participant: Participant) -> None:
        """Give a participant who just entered their peer connection (outside the lock)."""
        assert conn.media_pending is not None
        try:
            peer = await self.media.join(
                participant.id, lambda offer: self._send_offer(conn, offer),
                publish=sorted(participant.publishes), on_state=lambda state: self._peer_state(conn, state),
            )
        except RoomFullError:
            log.warning("media room full %s", kv(meeting=ids.short(self.id)))
            peer = None
        except Exception:
            if conn.state == JOINED and conn.participant is participant:
                log.exception("media join failed %s", kv(meeting=ids.short(self.id)))
            else:
                # Gone (left, removed) while it was being set up: its peer was closed under it.
                log.info("media join abandoned %s", kv(meeting=ids.short(self.id)))
            peer = None
        async with self._lock:
            conn.media_pending.set()
            conn.media_pending = None
            if conn.state != JOINED or conn.participant is not participant:
                # Removed, or gone, while the media was being set up: no orphan peer.
                await self.media.leave(participant.id)
            elif peer is None:
                conn.send(msg.error("media-failed", "The server could not set up your media."))
                conn.channel.close(msg.CLOSE_RETRY, "media failed")
                await self._drop(conn, barred=False)
            else:
                conn.peer = peer

    async def _welcome(self, participant: Participant, is_host: bool) -> dict[str, Any]:
        token = self._resume.issue(participant.id)
        welcome: dict[str, Any] = {
            "you": participant.public(),
            "participants": [p.public() for p in self.room.others(participant.id)],
            "ice_servers": self.context.ice_servers(),
            "resume": token,
            "locked": self.room.locked,
            "e2ee": self.meeting.e2ee,
        }
        recordings = self.context.recordings
        if recordings is not None:
            # Everyone is told on arrival whether the meeting is being recorded.
            welcome["recording"] = recording_message(self.recording, with_reason=False)
            if is_host:
                welcome["recordings"] = await recordings.links(self.id)
        return reply("welcome", **welcome)

    async def _send_offer(self, conn: Conn, offer: Offer) -> None:
        conn.send(reply("offer", sdp=offer.sdp, slots=[
            {"mid": s.mid, "kind": s.kind, "source": s.source, "direction": s.direction,
             "participant": s.participant}
            for s in offer.slots
        ]))

    def _peer_state(self, conn: Conn, state: str) -> None:
        if state == "connected" and conn.participant is not None:
            self.room.media_connected(conn.participant.id)
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None
        elif state in ("failed", "closed") and conn.state == JOINED:
            self._spawn(self._media_failed(conn, state))

    async def _media_failed(self, conn: Conn, state: str) -> None:
        async with self._lock:
            if conn.state != JOINED or conn.peer is None or conn.peer.connection_state != state:
                return
            log.info("peer %s %s", state, kv(meeting=ids.short(self.id)))
            conn.send(msg.error("media-failed", "The media connection failed."))
            conn.channel.close(msg.CLOSE_RETRY, "media failed")
            await self._drop(conn, barred=False)

    async def _admit(self, conn: Conn) -> None:
        """Let a lobby guest in (a host decided, or the meeting was unlocked)."""
        if conn.state != WAITING or conn.pending is None:
            return
        self._leave_lobby(conn)
        await self._enter(conn, conn.pending, is_host=False)

    # --- in the meeting ----------------------------------------------------------------------

    def _update(self, conn: Conn, **changes: Any) -> None:
        assert conn.participant is not None
        events = self.room.update(conn.participant.id, **changes)
        conn.participant = self.room.participants[conn.participant.id]
        self._tell(events)

    def _chat(self, conn: Conn, message: Chat) -> None:
        assert conn.participant is not None
        if self.meeting.e2ee != (message.ciphertext is not None):
            raise SignalingError("bad-message", "this meeting's chat is "
                                 + ("end-to-end encrypted" if self.meeting.e2ee else "not encrypted"))
        if not conn.chat_budget.take():
            raise SignalingError("chat-rate-limited", "You are sending messages too fast.")
        body = {"text": message.text} if message.text is not None else {"ciphertext": message.ciphertext}
        self._broadcast(reply("chat", **{
            "from": conn.participant.id, "name": conn.participant.name,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **body,
        }))

    async def _publish(self, conn: Conn, message: Publish) -> None:
        assert conn.participant is not None and conn.peer is not None
        if message.on:
            await conn.peer.publish(message.source)
            publishes = conn.participant.publishes | {message.source}
        else:
            await conn.peer.unpublish(message.source)
            publishes = conn.participant.publishes - {message.source}
        self._update(conn, publishes=frozenset(publishes))

    # --- host actions --------------------------------------------------------------------

    async def _host_action(self, conn: Conn, message: HostAction) -> None:
        assert conn.participant is not None
        if not conn.participant.is_host:
            log.warning("host action refused %s", kv(meeting=ids.short(self.id), action=message.action))
            raise SignalingError("not-host", "only hosts can do that")
        action, target = message.action, message.target or ""
        if action == "lock":
            await self._publish_events(self.room.lock(bool(message.locked)))
            if not message.locked:  # unlocking lets everyone waiting in
                for waiting in list(self._lobby.values()):
                    await self._admit(waiting)
        elif action == "admit" and target in self._lobby:
            await self._admit(self._lobby[target])
        elif action == "deny" and target in self._lobby:
            await self._close_with(self._lobby[target], "denied", "A host did not let you in.", barred=True)
        elif action == "remove" and target in self._joined and self._joined[target] is not conn:
            await self._close_with(self._joined[target], "removed", "A host removed you from the meeting.",
                                   barred=True)
        elif action == "ask-mute" and target in self._joined:
            self._joined[target].send(reply("mute-request", by=conn.participant.name))
        elif action == "end-meeting":
            log.info("meeting ended by a host %s", kv(meeting=ids.short(self.id)))
            for other in list(self._lobby.values()) + list(self._joined.values()):
                await self._close_with(other, "meeting-ended", "The host ended the meeting.", barred=True)
        elif action == "start-recording":
            try:
                await self._start_recording()
            except RecordingRefused as exc:
                raise SignalingError("recording-refused", str(exc)) from None
        elif action == "stop-recording":
            await self._stop_recording(STOP_HOST)

    async def _close_with(self, conn: Conn, kind: str, text: str, barred: bool) -> None:
        """Tell the browser why, then close its connection for good and drop it."""
        conn.send(reply(kind, message=text))
        conn.channel.close(msg.CLOSE_FINAL, kind)
        await self._drop(conn, barred=barred)

    # --- recording -----------------------------------------------------------------------

    async def _start_recording(self) -> RecordingStatus:
        recordings = self.context.recordings
        if recordings is None:
            raise RecordingRefused("unavailable", "Recording is not available on this server.")
        if not self.room.participants:
            raise RecordingRefused("empty", "Nobody is in the meeting: recording starts once people have joined.")
        status = await recordings.start_recording(self.meeting, self.media, self.participant_name)
        self._recording_changed(status)
        return status

    async def _stop_recording(self, reason: str) -> RecordingStatus:
        recordings = self.context.recordings
        if recordings is None or not self.recording.active:
            return RecordingStatus(self.id, False, not self.meeting.e2ee)
        status = await recordings.stop_recording(self.id, reason)
        self._recording_changed(status)
        return status

    def _recording_changed(self, status: RecordingStatus) -> None:
        if status.active == self.recording.active and status.reason == self.recording.reason:
            return
        self.recording = status
        self._broadcast(recording_message(status))
        if status.reason == STOP_DISK:
            self._to_hosts(reply("notice", text="Recording stopped: the server is low on disk space. "
                                                "What was recorded so far is kept."))

    # --- leaving -------------------------------------------------------------------------

    def _leave_lobby(self, conn: Conn) -> None:
        if conn.waiting_id is not None and self._lobby.get(conn.waiting_id) is conn:
            del self._lobby[conn.waiting_id]
        self._tell(self.room.unknock(conn.waiting_id or ""))
        conn.state = NEW

    async def _drop(self, conn: Conn, barred: bool) -> None:
        """Take a connection out of the lobby, the room and the media; safe to repeat.

        ``barred`` (removed by a host, the meeting ended) forgets the participant's resume
        token; a dropped page keeps it for a grace period (see resume.py).
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
        await self._stop_recording(STOP_EMPTY)
        await self.media.close()
        current = asyncio.current_task()
        for task in [t for t in self._tasks if t is not current]:
            task.cancel()
        self.finished.set()

    # --- telling people ------------------------------------------------------------------

    def _broadcast(self, message: dict[str, Any], skip: str | None = None) -> None:
        for pid, conn in self._joined.items():
            if pid != skip:
                conn.send(message)

    def _to_hosts(self, message: dict[str, Any]) -> None:
        for conn in self._joined.values():
            if conn.participant is not None and conn.participant.is_host:
                conn.send(message)

    async def _publish_events(self, events: list[RoomEvent]) -> None:
        """Tell the room what changed, then the bus who is present now."""
        self._tell(events)
        hosts_present = self.room.hosts_present()
        if hosts_present != self._hosts_present:
            # Whoever waits in the lobby learns whether anyone can let them in.
            self._hosts_present = hosts_present
            for waiting in self._lobby.values():
                waiting.send(_waiting_message(hosts_present))
        presence_now = presence(self.id, self.room, events)
        if presence_now is not None:
            await self.context.bus.publish(presence_now)
        if any(isinstance(e, Ended) for e in events):
            await self._stop_recording(STOP_EMPTY)

    def _tell(self, events: list[RoomEvent]) -> None:
        for notice in notices(events):
            if notice.audience == HOSTS:
                self._to_hosts(notice.message)
            else:
                self._broadcast(notice.message, skip=notice.skip)
        for event in events:
            if isinstance(event, Ended):
                log.info("meeting ended %s", kv(meeting=ids.short(self.id),
                                                 minutes=round(event.duration.total_seconds() / 60, 1)))

    def _spawn(self, coroutine: Any) -> None:
        """Run work that must take the lock later (a peer's state callback), holding its task."""
        # Whatever context spawned it (a peer's task, a timer), its lines name this meeting.
        context = contextvars.copy_context()
        context.run(bind_meeting, self.id)
        task = asyncio.get_running_loop().create_task(coroutine, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _waiting_message(hosts_present: bool) -> dict[str, Any]:
    text = ("This meeting is locked. A host will let you in shortly." if hosts_present else
            "This meeting is locked and no host is in it right now. You will be let in when a host arrives.")
    return reply("waiting", message=text, hosts_present=hosts_present)
