"""The signaling websocket: one per participant, JSON messages in, room and media calls out.

A connection is a small state machine: ``new`` until it joins, ``waiting`` in the lobby of a
locked meeting, ``joined`` once in, ``closed`` at the end. Whatever it sends, it acts only on
its own participant and peer connection; host actions need a host key, checked at join.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import WSMsgType, web

from meeting import ids
from meeting.config import MediaConfig
from meeting.logfmt import kv
from meeting.models import Meeting
from meeting.recording.service import STOP_DISK, RecordingRefused, RecordingStatus
from meeting.recording.model import Recording
from meeting.session.room import (
    Ended, Joined, Left, LobbyChanged, LockChanged, Participant, Room, RoomEvent, RoomFull, Rooms,
    Updated,
)
from meeting.service import MeetingService
from meeting.media.sfu import CandidateError, Offer, Peer, SdpError, Sfu

from .keys import MEETINGS, SIGNALING
from .ratelimit import KeyedLimiter, TokenBucket
from meeting.session.messages import (
    MAX_MESSAGE_BYTES, Answer, Candidate, Chat, ClientMessage, HostAction, Join, Leave, MediaState,
    Ping, Publish, SignalingError, parse_message,
)

if TYPE_CHECKING:
    from meeting.recording.service import RecordingService

log = logging.getLogger(__name__)

# aiohttp pings every HEARTBEAT s and drops a socket whose pong is late: a vanished
# browser is cleaned up within ~1.5 x HEARTBEAT.
HEARTBEAT = 3.0
# Per-connection message budget: generous for ICE candidate bursts, tight for floods.
RATE_PER_SECOND = 50.0
RATE_BURST = 200.0
# Per client address: join attempts, and messages over all its connections.
JOINS_PER_SECOND = 0.5
JOIN_BURST = 10.0
IP_MESSAGES_PER_SECOND = 150.0
IP_MESSAGE_BURST = 600.0
# A page that lost its connection may take its place back (past the lobby) this long.
RESUME_GRACE = 60.0
# Chat, per participant: a conversation, not a flood.
CHAT_PER_SECOND = 1.0
CHAT_BURST = 5.0

Listener = Callable[[str, RoomEvent, list[str]], Awaitable[None]]


class Signaling:
    """Every live signaling connection, by meeting, plus what they share."""

    def __init__(self, rooms: Rooms, sfu: Sfu, media: MediaConfig, meetings: MeetingService) -> None:
        self.rooms = rooms
        self.sfu = sfu
        self.media = media
        self.meetings = meetings
        self.rate_per_second = RATE_PER_SECOND
        self.rate_burst = RATE_BURST
        self.joins = KeyedLimiter(JOINS_PER_SECOND, JOIN_BURST)
        self.ip_messages = KeyedLimiter(IP_MESSAGES_PER_SECOND, IP_MESSAGE_BURST)
        self.connections: dict[str, dict[str, Connection]] = {}
        self.waiting: dict[str, dict[str, Connection]] = {}
        self._resume: dict[str, tuple[str, float]] = {}  # token -> (participant id, expiry)
        self.tasks: set[asyncio.Task[Any]] = set()
        # Told of every room event with the names present after it (the chat announcer).
        self.listeners: list[Listener] = []
        self.recordings: RecordingService | None = None

    def attach_recordings(self, recordings: RecordingService) -> None:
        """Show recording state in meetings, give hosts the link, stop when a meeting empties."""
        self.recordings = recordings
        recordings.listeners.append(self._recording_changed)
        recordings.ready_listeners.append(self._recording_ready)
        self.listeners.append(recordings.on_room_event)

    async def _recording_changed(self, status: RecordingStatus) -> None:
        await self.broadcast(status.meeting_id, status.message())
        if status.reason == STOP_DISK:
            await self.to_hosts(status.meeting_id, {
                "type": "notice", "text": "Recording stopped: the server is low on disk space. "
                                          "What was recorded so far is kept."})

    async def _recording_ready(self, recording: Recording, url: str) -> None:
        assert self.recordings is not None
        await self.to_hosts(recording.meeting_id, {"type": "recording-ready", **self.recordings.link(recording)})

    def names(self, meeting_id: str, participant_id: str) -> str:
        """A participant's display name (the recorder labels tracks with it)."""
        room = self.rooms.get(meeting_id)
        participant = room.participants.get(participant_id) if room else None
        return participant.name if participant else "Guest"

    def occupancy(self, meeting_id: str) -> int:
        room = self.rooms.get(meeting_id)
        return len(room.participants) if room else 0

    def ice_servers(self) -> list[dict[str, Any]]:
        """The STUN/TURN servers the browser should use, in RTCIceServer form."""
        return [
            {"urls": list(s.urls), **({"username": s.username, "credential": s.credential}
                                      if s.username else {})}
            for s in self.media.ice_servers
        ]

    def present(self, meeting_id: str) -> list[Connection]:
        return list(self.connections.get(meeting_id, {}).values())

    async def broadcast(self, meeting_id: str, message: dict[str, Any], skip: str | None = None) -> None:
        """Send a message to everyone in a meeting (but ``skip``)."""
        for connection in self.present(meeting_id):
            if connection.participant and connection.participant.id != skip:
                await connection.send(message)

    async def to_hosts(self, meeting_id: str, message: dict[str, Any]) -> None:
        for connection in self.present(meeting_id):
            if connection.participant and connection.participant.is_host:
                await connection.send(message)

    async def publish_events(self, meeting_id: str, events: list[RoomEvent]) -> None:
        """Tell the room's participants, and any listeners, what changed."""
        room = self.rooms.get(meeting_id)
        present = [p.name for p in room.participants.values()] if room else []
        for event in events:
            await self._tell_room(meeting_id, event)
            for listener in self.listeners:
                try:
                    await listener(meeting_id, event, present)
                except Exception:  # telling chat must never break the meeting
                    log.exception("room event listener failed")

    async def _tell_room(self, meeting_id: str, event: RoomEvent) -> None:
        if isinstance(event, Joined):
            await self.broadcast(meeting_id, {"type": "participant-joined",
                                              "participant": event.participant.public()},
                                 skip=event.participant.id)
        elif isinstance(event, Left):
            await self.broadcast(meeting_id, {"type": "participant-left", "id": event.participant.id})
        elif isinstance(event, Updated):
            await self.broadcast(meeting_id, {"type": "participant-updated",
                                              "participant": event.participant.public()})
        elif isinstance(event, LockChanged):
            await self.broadcast(meeting_id, {"type": "locked", "locked": event.locked})
        elif isinstance(event, LobbyChanged):
            await self.to_hosts(meeting_id, lobby_message(event.waiting))
        elif isinstance(event, Ended):
            log.info("meeting ended %s", kv(meeting=ids.short(meeting_id),
                                             minutes=round(event.duration.total_seconds() / 60, 1)))

    def new_resume_token(self, participant_id: str) -> str:
        token = secrets.token_urlsafe(16)
        self._resume[token] = (participant_id, math.inf)
        return token

    def resumed_participant(self, token: str | None) -> str | None:
        """Whose place a reconnecting page takes back, if its token is still good (once)."""
        pid, expires = self._resume.pop(token, (None, 0.0)) if token else (None, 0.0)
        return pid if time.monotonic() < expires else None

    def expire_resume(self, participant_id: str, grace: float) -> None:
        """Keep a participant's token for ``grace`` seconds after they went (0: forget it)."""
        now = time.monotonic()
        for token, (pid, expires) in list(self._resume.items()):
            if pid == participant_id:
                self._resume[token] = (pid, min(expires, now + grace))
            if self._resume[token][1] <= now:
                del self._resume[token]

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a fire-and-forget task until it ends, so it is not collected halfway."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def lobby_message(waiting: Any) -> dict[str, Any]:
    return {"type": "lobby", "waiting": [{"id": w.id, "name": w.name} for w in waiting]}


class Connection:
    """One browser's websocket and, once joined, its place in the room and the SFU."""

    def __init__(self, signaling: Signaling, meeting: Meeting, ws: web.WebSocketResponse,
                 address: str) -> None:
        self.signaling = signaling
        self.meeting = meeting
        self.meeting_id = meeting.id
        self.ws = ws
        self.address = address
        self.state = "new"
        self.participant: Participant | None = None
        self.peer: Peer | None = None
        self.waiting_id: str | None = None
        self.pending: Join | None = None
        self.barred = False  # removed by a host, or the meeting ended: no resuming
        self.budget = TokenBucket(signaling.rate_per_second, signaling.rate_burst)
        self.chat_budget = TokenBucket(CHAT_PER_SECOND, CHAT_BURST)

    async def send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            try:
                await self.ws.send_json(message)
            except (ConnectionError, RuntimeError):
                pass  # the reader notices the close and cleans up

    async def error(self, code: str, message: str) -> None:
        await self.send({"type": "error", "code": code, "message": message})

    async def handle(self, raw: str) -> None:
        """Act on one text frame; bad input is answered with an error and changes nothing."""
        if not (self.budget.take() and self.signaling.ip_messages.take(self.address)):
            await self.error("rate-limited", "too many messages; slow down")
            return
        try:
            await self._dispatch(parse_message(raw))
        except SignalingError as exc:
            await self.error(exc.code, str(exc))
        except SdpError as exc:
            await self.error("bad-sdp", f"answer refused: {exc}")
        except CandidateError as exc:
            await self.error("bad-candidate", f"candidate refused: {exc}")
        except Exception:  # a bug must cost one message, never the meeting
            log.exception("signaling message failed %s", kv(meeting=ids.short(self.meeting_id)))
            await self.error("internal", "the server could not handle that message")

    async def _dispatch(self, message: ClientMessage) -> None:
        if isinstance(message, Ping):
            await self.send({"type": "pong"})
        elif isinstance(message, Join):
            await self._join(message)
        elif isinstance(message, Leave):
            await self.close()
            await self.ws.close()
        elif self.state != "joined" or self.participant is None or self.peer is None:
            raise SignalingError("not-joined", "join first")
        elif isinstance(message, Answer):
            await self.peer.accept_answer(message.sdp)
        elif isinstance(message, Candidate):
            await self.peer.add_candidate(message.candidate, message.sdp_mid, message.sdp_mline_index)
        elif isinstance(message, MediaState):
            await self._update(audio_muted=message.audio_muted, video_muted=message.video_muted)
        elif isinstance(message, Chat):
            await self._chat(message)
        elif isinstance(message, Publish):
            await self._publish(message)
        elif isinstance(message, HostAction):
            await self._host_action(message)

    # ---- joining

    async def _join(self, message: Join) -> None:
        if self.state != "new":
            raise SignalingError("already-joined", "this connection has joined already")
        if not self.signaling.joins.take(self.address):
            await self.error("rate-limited", "Too many join attempts from your address; wait a moment.")
            await self.ws.close()
            return
        is_host = await self._check_host_key(message.host_key)
        resumed = await self._evict_resumed(message.resume)
        room = self.signaling.rooms.open(self.meeting_id)
        # A page back from a blip was admitted before: it does not queue in the lobby again.
        if room.locked and not is_host and not resumed:
            waiting, events = room.knock(message.name)
            self.state, self.waiting_id, self.pending = "waiting", waiting.id, message
            self.signaling.waiting.setdefault(self.meeting_id, {})[waiting.id] = self
            await self.send({"type": "waiting",
                             "message": "This meeting is locked. A host will let you in shortly."})
            await self.signaling.publish_events(self.meeting_id, events)
            return
        await self._enter(room, message, is_host)

    async def _check_host_key(self, host_key: str | None) -> bool:
        if not host_key:
            return False
        if await self.signaling.meetings.is_host(self.meeting_id, host_key):
            return True
        log.warning("host key refused %s", kv(meeting=ids.short(self.meeting_id)))
        await self.send({"type": "notice", "text": "This host link is not valid for this meeting. "
                                                   "You join as a guest."})
        return False

    async def _evict_resumed(self, token: str | None) -> bool:
        """Take back a reconnecting page's place; True when its resume token was good."""
        stale = self.signaling.resumed_participant(token)
        previous = self.signaling.connections.get(self.meeting_id, {}).get(stale or "")
        if previous is not None:  # the same page, back after a blip: its old socket goes
            await previous.close()
            await previous.ws.close()
        return stale is not None

    async def _enter(self, room: Room, message: Join, is_host: bool) -> None:
        try:
            participant, events = room.join(message.name, message.publish, is_host=is_host)
        except RoomFull:
            self.signaling.rooms.discard_if_empty(self.meeting_id)
            await self.error("meeting-full", f"This meeting is full ({room.capacity} people).")
            await self.ws.close()
            return
        self.state, self.participant = "joined", participant
        self.signaling.connections.setdefault(self.meeting_id, {})[participant.id] = self
        log.info("joined %s", kv(meeting=ids.short(self.meeting_id), participant=participant.id[:4],
                                 host=is_host, present=len(room.participants)))
        recordings = self.signaling.recordings
        welcome: dict[str, Any] = {
            "type": "welcome",
            "you": participant.public(),
            "participants": [p.public() for p in room.others(participant.id)],
            "ice_servers": self.signaling.ice_servers(),
            "resume": self.signaling.new_resume_token(participant.id),
            "locked": room.locked,
            "e2ee": self.meeting.e2ee,
        }
        if recordings is not None:
            # Everyone is told on arrival whether the meeting is being recorded.
            welcome["recording"] = recordings.status(self.meeting).message()
            if is_host:
                welcome["recordings"] = await recordings.links(self.meeting_id)
        await self.send(welcome)
        if is_host and room.lobby:
            await self.send(lobby_message(room.lobby.values()))
        await self.signaling.publish_events(self.meeting_id, events)
        try:
            self.peer = await self.signaling.sfu.join(
                self.meeting_id, participant.id, self._send_offer,
                publish=sorted(participant.publishes), on_state=self._on_peer_state,
            )
        except Exception:
            log.exception("media join failed %s", kv(meeting=ids.short(self.meeting_id)))
            await self.close_with({"type": "error", "code": "media-failed",
                                   "message": "The server could not set up your media."})
            return
        if self.state != "joined":  # removed or replaced while the media was being set up
            await self.signaling.sfu.leave(self.meeting_id, participant.id)

    async def admit(self) -> None:
        """Let this lobby connection in (a host decided)."""
        room = self.signaling.rooms.get(self.meeting_id)
        if self.state != "waiting" or room is None or self.pending is None:
            return
        self.state = "admitting"  # a second admit, or a close, now sees this is under way
        self._leave_lobby_registry()
        await self.signaling.publish_events(self.meeting_id, room.unknock(self.waiting_id or ""))
        if self.state != "admitting" or self.ws.closed:  # gone while the hosts were told
            return
        await self._enter(self.signaling.rooms.open(self.meeting_id), self.pending, is_host=False)

    async def _send_offer(self, offer: Offer) -> None:
        await self.send({
            "type": "offer",
            "sdp": offer.sdp,
            "slots": [
                {"mid": s.mid, "kind": s.kind, "source": s.source, "direction": s.direction,
                 "participant": s.participant}
                for s in offer.slots
            ],
        })

    def _on_peer_state(self, state: str) -> None:
        if state in ("failed", "closed") and self.state == "joined":
            log.info("peer %s %s", state, kv(meeting=ids.short(self.meeting_id)))
            failed = {"type": "error", "code": "media-failed", "message": "The media connection failed."}
            self.signaling.keep(asyncio.ensure_future(self.close_with(failed)))

    # ---- in the meeting

    def _room(self) -> Room:
        room = self.signaling.rooms.get(self.meeting_id)
        assert room is not None, "a joined participant's room exists"
        return room

    async def _update(self, **changes: Any) -> None:
        assert self.participant is not None
        events = self._room().update(self.participant.id, **changes)
        self.participant = self._room().participants[self.participant.id]
        await self.signaling.publish_events(self.meeting_id, events)

    async def _chat(self, message: Chat) -> None:
        assert self.participant is not None
        if self.meeting.e2ee != (message.ciphertext is not None):
            raise SignalingError("bad-message", "this meeting's chat is "
                                 + ("end-to-end encrypted" if self.meeting.e2ee else "not encrypted"))
        if not self.chat_budget.take():
            raise SignalingError("chat-rate-limited", "You are sending messages too fast.")
        body = {"text": message.text} if message.text is not None else {"ciphertext": message.ciphertext}
        await self.signaling.broadcast(self.meeting_id, {
            "type": "chat", "from": self.participant.id, "name": self.participant.name,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **body,
        })

    async def _publish(self, message: Publish) -> None:
        assert self.participant is not None and self.peer is not None
        if message.on:
            await self.peer.publish(message.source)
            publishes = self.participant.publishes | {message.source}
        else:
            await self.peer.unpublish(message.source)
            publishes = self.participant.publishes - {message.source}
        await self._update(publishes=frozenset(publishes))

    # ---- host actions

    async def _host_action(self, message: HostAction) -> None:
        assert self.participant is not None
        if not self.participant.is_host:
            log.warning("host action refused %s", kv(meeting=ids.short(self.meeting_id),
                                                      action=message.action))
            raise SignalingError("not-host", "only hosts can do that")
        room = self._room()
        if message.action == "lock":
            await self.signaling.publish_events(self.meeting_id, room.lock(bool(message.locked)))
            if not message.locked:  # unlocking lets everyone waiting in
                for waiting in list(self.signaling.waiting.get(self.meeting_id, {}).values()):
                    await waiting.admit()
        elif message.action == "admit":
            target = self.signaling.waiting.get(self.meeting_id, {}).get(message.target or "")
            if target is not None:
                await target.admit()
        elif message.action == "deny":
            target = self.signaling.waiting.get(self.meeting_id, {}).get(message.target or "")
            if target is not None:
                await target.close_with({"type": "denied", "message": "A host did not let you in."})
        elif message.action == "remove":
            target = self.signaling.connections.get(self.meeting_id, {}).get(message.target or "")
            if target is not None and target is not self:
                target.barred = True
                await target.close_with({"type": "removed", "message": "A host removed you from the meeting."})
        elif message.action == "ask-mute":
            target = self.signaling.connections.get(self.meeting_id, {}).get(message.target or "")
            if target is not None:
                await target.send({"type": "mute-request", "by": self.participant.name})
        elif message.action == "end-meeting":
            await self._end_for_all()
        elif message.action in ("start-recording", "stop-recording"):
            await self._recording(message.action == "start-recording")

    async def _recording(self, start: bool) -> None:
        recordings = self.signaling.recordings
        if recordings is None:
            raise SignalingError("recording-refused", "Recording is not available on this server.")
        if not start:
            await recordings.stop_recording(self.meeting_id)
            return
        try:
            await recordings.start_recording(self.meeting)
        except RecordingRefused as exc:
            raise SignalingError("recording-refused", str(exc)) from None

    async def _end_for_all(self) -> None:
        log.info("meeting ended by a host %s", kv(meeting=ids.short(self.meeting_id)))
        for waiting in list(self.signaling.waiting.get(self.meeting_id, {}).values()):
            await waiting.close_with({"type": "meeting-ended", "message": "The host ended the meeting."})
        for connection in self.signaling.present(self.meeting_id):
            connection.barred = True
            await connection.close_with({"type": "meeting-ended", "message": "The host ended the meeting."})

    # ---- leaving

    async def close_with(self, message: dict[str, Any]) -> None:
        """Tell the browser why, then leave and close its socket."""
        await self.send(message)
        await self.close()
        await self.ws.close()

    def _leave_lobby_registry(self) -> None:
        lobby = self.signaling.waiting.get(self.meeting_id, {})
        if lobby.get(self.waiting_id or "") is self:
            del lobby[self.waiting_id or ""]
        if not lobby:
            self.signaling.waiting.pop(self.meeting_id, None)

    async def close(self) -> None:
        """Leave the lobby, the room and the SFU; safe to call more than once."""
        state, self.state = self.state, "closed"
        room = self.signaling.rooms.get(self.meeting_id)
        if state in ("waiting", "admitting") and room is not None:
            self._leave_lobby_registry()
            await self.signaling.publish_events(self.meeting_id, room.unknock(self.waiting_id or ""))
            self.signaling.rooms.discard_if_empty(self.meeting_id)
        if state != "joined" or self.participant is None or room is None:
            return
        pid = self.participant.id
        connections = self.signaling.connections.get(self.meeting_id, {})
        if connections.get(pid) is self:
            del connections[pid]
        if not connections:
            self.signaling.connections.pop(self.meeting_id, None)
        # Removed people and ended meetings give no way back; a dropped page gets a grace period.
        self.signaling.expire_resume(pid, 0.0 if self.barred else RESUME_GRACE)
        # The room is told first: whatever the media plane does, nobody stays as a ghost.
        events = room.leave(pid)
        try:
            await self.signaling.sfu.leave(self.meeting_id, pid)
        except Exception:
            log.exception("media leave failed %s", kv(meeting=ids.short(self.meeting_id)))
        log.info("left %s", kv(meeting=ids.short(self.meeting_id), participant=pid[:4]))
        await self.signaling.publish_events(self.meeting_id, events)
        self.signaling.rooms.discard_if_empty(self.meeting_id)


async def close_all(app: web.Application) -> None:
    """``on_shutdown``: tell every browser the server is going away, then stop the media."""
    signaling = app[SIGNALING]
    for group in (signaling.connections, signaling.waiting):
        for connections in list(group.values()):
            for connection in list(connections.values()):
                await connection.ws.close(code=1001, message=b"server shutting down")
    await signaling.sfu.close()


async def meeting_socket(request: web.Request) -> web.StreamResponse:
    """``GET /m/{id}/ws``: the signaling websocket of a meeting."""
    meeting = await request.app[MEETINGS].get(request.match_info["meeting_id"])
    if meeting is None:
        raise web.HTTPNotFound()
    # aiohttp's own cap sits above ours so an oversized message gets an error reply, not a drop.
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=4 * MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    connection = Connection(request.app[SIGNALING], meeting, ws, request.remote or "")
    try:
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                await connection.handle(frame.data)
            elif frame.type == WSMsgType.BINARY:
                await connection.error("bad-message", "binary frames are not part of the protocol")
    finally:
        # aiohttp may cancel a handler whose client vanished (its test server does, and so does
        # handler_cancellation=True); the goodbye must still finish.
        await asyncio.shield(connection.close())
    return ws
