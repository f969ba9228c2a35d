"""The signaling websocket: one per participant, JSON messages in, room and media calls out.

A connection is a tiny state machine: it may only ``join`` (or ``ping``) until it has joined,
and then answers offers, trickles candidates, reports mute state, and leaves. Whatever it
sends, it acts only on its own participant and its own peer connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web

from meeting import ids
from meeting.config import MediaConfig
from meeting.logfmt import kv
from meeting.room import Ended, Joined, Left, Participant, Room, RoomEvent, RoomFull, Rooms, Updated
from meeting.sfu import CandidateError, Offer, Peer, SdpError, Sfu

from .keys import MEETINGS, SIGNALING
from .signaling import (
    MAX_MESSAGE_BYTES, Answer, Candidate, ClientMessage, Join, Leave, MediaState, Ping,
    SignalingError, parse_message,
)

log = logging.getLogger(__name__)

# aiohttp pings every HEARTBEAT s and drops a socket whose pong is late: a vanished
# browser is cleaned up within ~1.5 x HEARTBEAT.
HEARTBEAT = 3.0
# Per-socket message budget: generous for ICE candidate bursts, tight for floods.
RATE_PER_SECOND = 50.0
RATE_BURST = 200.0


@dataclass
class TokenBucket:
    """A leaky budget of messages: ``take()`` is False once it is spent."""

    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Signaling:
    """Every live signaling connection, by meeting and participant, plus what they share."""

    def __init__(self, rooms: Rooms, sfu: Sfu, media: MediaConfig) -> None:
        self.rooms = rooms
        self.sfu = sfu
        self.media = media
        self.rate_per_second = RATE_PER_SECOND
        self.rate_burst = RATE_BURST
        self.connections: dict[str, dict[str, Connection]] = {}
        self._resume: dict[str, str] = {}  # resume token -> participant id
        # Told of every room event with the names present after it (the chat announcer).
        self.listeners: list[Callable[[str, RoomEvent, list[str]], Awaitable[None]]] = []

    def ice_servers(self) -> list[dict[str, Any]]:
        """The STUN/TURN servers the browser should use, in RTCIceServer form."""
        return [
            {"urls": list(s.urls), **({"username": s.username, "credential": s.credential}
                                      if s.username else {})}
            for s in self.media.ice_servers
        ]

    async def broadcast(self, meeting_id: str, message: dict[str, Any], skip: str | None = None) -> None:
        """Send a message to everyone in a meeting (but ``skip``)."""
        for pid, connection in list(self.connections.get(meeting_id, {}).items()):
            if pid != skip:
                await connection.send(message)

    async def publish_events(self, meeting_id: str, events: list[RoomEvent]) -> None:
        """Tell the room's participants, and any listeners, what changed."""
        room = self.rooms.get(meeting_id)
        present = [p.name for p in room.participants.values()] if room else []
        for event in events:
            if isinstance(event, Joined):
                await self.broadcast(meeting_id, {"type": "participant-joined",
                                                  "participant": event.participant.public()},
                                     skip=event.participant.id)
            elif isinstance(event, Left):
                await self.broadcast(meeting_id, {"type": "participant-left",
                                                  "id": event.participant.id})
            elif isinstance(event, Updated):
                await self.broadcast(meeting_id, {"type": "participant-updated",
                                                  "participant": event.participant.public()})
            elif isinstance(event, Ended):
                log.info("meeting ended %s", kv(meeting=ids.short(meeting_id),
                                                 minutes=round(event.duration.total_seconds() / 60, 1)))
            for listener in self.listeners:
                try:
                    await listener(meeting_id, event, present)
                except Exception:  # telling chat must never break the meeting
                    log.exception("room event listener failed")

    def new_resume_token(self, participant_id: str) -> str:
        token = secrets.token_urlsafe(16)
        self._resume[token] = participant_id
        return token

    def resumed_participant(self, token: str | None) -> str | None:
        return self._resume.pop(token, None) if token else None

    def forget_resume(self, participant_id: str) -> None:
        for token, pid in list(self._resume.items()):
            if pid == participant_id:
                del self._resume[token]


class Connection:
    """One participant's websocket and, once joined, their place in the room and SFU."""

    def __init__(self, signaling: Signaling, meeting_id: str, ws: web.WebSocketResponse) -> None:
        self.signaling = signaling
        self.meeting_id = meeting_id
        self.ws = ws
        self.participant: Participant | None = None
        self.peer: Peer | None = None
        self.budget = TokenBucket(signaling.rate_per_second, signaling.rate_burst)
        self._closed = False

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
        if not self.budget.take():
            await self.error("rate-limited", "too many messages; slow down")
            return
        try:
            message = parse_message(raw)
            await self._dispatch(message)
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
        elif self.participant is None or self.peer is None:
            raise SignalingError("not-joined", "join first")
        elif isinstance(message, Answer):
            await self.peer.accept_answer(message.sdp)
        elif isinstance(message, Candidate):
            await self.peer.add_candidate(message.candidate, message.sdp_mid, message.sdp_mline_index)
        elif isinstance(message, MediaState):
            events = self._room().update(self.participant.id, audio_muted=message.audio_muted,
                                         video_muted=message.video_muted)
            await self.signaling.publish_events(self.meeting_id, events)
        elif isinstance(message, Leave):
            await self.close()
            await self.ws.close()

    async def _join(self, message: Join) -> None:
        if self.participant is not None:
            raise SignalingError("already-joined", "this connection has joined already")
        stale = self.signaling.resumed_participant(message.resume)
        if stale is not None:
            previous = self.signaling.connections.get(self.meeting_id, {}).get(stale)
            if previous is not None:
                await previous.close()
        room = self.signaling.rooms.open(self.meeting_id)
        try:
            participant, events = room.join(message.name, message.publish)
        except RoomFull:
            self.signaling.rooms.discard_if_empty(self.meeting_id)
            await self.error("meeting-full", f"This meeting is full ({room.capacity} people).")
            await self.ws.close()
            return
        self.participant = participant
        self.signaling.connections.setdefault(self.meeting_id, {})[participant.id] = self
        log.info("joined %s", kv(meeting=ids.short(self.meeting_id), participant=participant.id[:4],
                                 present=len(room.participants)))
        await self.send({
            "type": "welcome",
            "you": participant.public(),
            "participants": [p.public() for p in room.others(participant.id)],
            "ice_servers": self.signaling.ice_servers(),
            "resume": self.signaling.new_resume_token(participant.id),
        })
        await self.signaling.publish_events(self.meeting_id, events)
        self.peer = await self.signaling.sfu.join(
            self.meeting_id, participant.id, self._send_offer, publish=sorted(message.publish),
            on_state=self._on_peer_state,
        )

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
        if state in ("failed", "closed") and not self._closed:
            log.info("peer %s %s", state, kv(meeting=ids.short(self.meeting_id)))
            asyncio.ensure_future(self._close_both())

    async def _close_both(self) -> None:
        await self.close()
        await self.ws.close()

    def _room(self) -> Room:
        room = self.signaling.rooms.get(self.meeting_id)
        assert room is not None, "a joined participant's room exists"
        return room

    async def close(self) -> None:
        """Leave the room and the SFU; safe to call more than once."""
        if self._closed or self.participant is None:
            self._closed = True
            return
        self._closed = True
        pid = self.participant.id
        connections = self.signaling.connections.get(self.meeting_id, {})
        if connections.get(pid) is self:
            del connections[pid]
        if not connections:
            self.signaling.connections.pop(self.meeting_id, None)
        self.signaling.forget_resume(pid)
        # The room is told first: whatever the media plane does, nobody stays as a ghost.
        events = self._room().leave(pid)
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
    for connections in list(signaling.connections.values()):
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
    connection = Connection(request.app[SIGNALING], meeting.id, ws)
    try:
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                await connection.handle(frame.data)
            elif frame.type == WSMsgType.BINARY:
                await connection.error("bad-message", "binary frames are not part of the protocol")
    finally:
        # aiohttp cancels a handler whose client vanished; the goodbye must still finish.
        await asyncio.shield(connection.close())
    return ws
