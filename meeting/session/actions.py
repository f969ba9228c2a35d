"""What people do in a meeting once in: media state, chat, hands, reactions, mute requests,
and the hosts' tools (lock, admit, remove, mute all, hand over, end, record).

:class:`MeetingActions` is part of :class:`meeting.session.session.MeetingSession`, kept in
its own module for size: its methods run under the session's lock, from its dispatch, and use
the session's state and its ways of telling people (declared below for readers and checkers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from meeting import ids
from meeting.logfmt import kv
from meeting.media.sfu import MediaRoom
from meeting.models import Meeting
from meeting.recording.service import STOP_DISK, STOP_HOST, RecordingRefused, RecordingStatus
from meeting.session.asks import Ask, MuteAsks
from meeting.session.audience import Audience
from meeting.session.conn import Conn
from meeting.session.context import SessionContext
from meeting.session.messages import Chat, Hand, HostAction, MuteAnswer, Publish, React, SignalingError, reply
from meeting.session.notices import lobby_message, recording_message
from meeting.session.resume import LeftBehind, ResumeTokens
from meeting.session.room import Room, RoomEvent

log = logging.getLogger(__name__)

# A host's "please mute" that gets no answer this soon is answered "no-answer" for them.
MUTE_ASK_SECONDS = 30.0


class MeetingActions:
    """A participant's and a host's actions inside the meeting (see the module's docstring)."""

    if TYPE_CHECKING:
        id: str
        meeting: Meeting
        context: SessionContext
        room: Room
        media: MediaRoom
        people: Audience
        recording: RecordingStatus
        _joined: dict[str, Conn]
        _lobby: dict[str, Conn]
        _asks: MuteAsks
        _granted: set[str]
        _resume: ResumeTokens
        _lock: asyncio.Lock
        _unlock_timer: asyncio.TimerHandle | None
        closed: bool

        def participant_name(self, participant_id: str) -> str: ...
        async def _admit(self, conn: Conn) -> None: ...
        async def _close_with(self, conn: Conn, kind: str, text: str, barred: bool) -> None: ...
        async def _publish_events(self, events: list[RoomEvent]) -> None: ...
        def _tell(self, events: list[RoomEvent]) -> None: ...
        def _refresh(self) -> None: ...
        def _spawn(self, coroutine: Any) -> None: ...

    # --- a participant's own state ---------------------------------------------------------

    def _update(self, conn: Conn, **changes: Any) -> None:
        assert conn.participant is not None
        events = self.room.update(conn.participant.id, **changes)
        conn.participant = self.room.participants[conn.participant.id]
        self._tell(events)

    async def _publish(self, conn: Conn, message: Publish) -> None:
        assert conn.participant is not None and conn.peer is not None
        if message.on:
            await conn.peer.publish(message.source)
            publishes = conn.participant.publishes | {message.source}
        else:
            await conn.peer.unpublish(message.source)
            publishes = conn.participant.publishes - {message.source}
        self._update(conn, publishes=frozenset(publishes))

    # --- the lock, when everyone has gone -------------------------------------------------

    def _carry_over(self, carried: LeftBehind) -> None:
        """Start as the meeting's last session ended, for pages coming back (see resume.py)."""
        self._resume = carried.tokens
        self._granted = set(carried.granted)
        if carried.locked:
            self.room.lock(True)
            self._unlock_when_nobody_came_back(carried.until)

    def _everyone_left(self) -> None:
        """The meeting starts over unlocked, as a new session would (people on the pre-join
        screen keep this one alive); but not while someone who dropped can still come back."""
        if self.room.lobby:
            return
        until = self._resume.good_until(time.monotonic())
        if until is None:
            self._tell(self.room.lock(False))
        else:
            self._unlock_when_nobody_came_back(until)

    def _unlock_when_nobody_came_back(self, until: float) -> None:
        if self._unlock_timer is not None:
            self._unlock_timer.cancel()
        self._unlock_timer = asyncio.get_running_loop().call_later(
            max(0.0, until - time.monotonic()), lambda: self._spawn(self._unlock_if_empty()))

    async def _unlock_if_empty(self) -> None:
        async with self._lock:
            self._unlock_timer = None
            if not self.closed and not self.room.participants and not self.room.lobby:
                self._tell(self.room.lock(False))

    # --- chat and gestures ----------------------------------------------------------------

    def _chat(self, conn: Conn, message: Chat) -> None:
        assert conn.participant is not None
        if self.meeting.e2ee != (message.ciphertext is not None):
            raise SignalingError("bad-message", "this meeting's chat is "
                                 + ("end-to-end encrypted" if self.meeting.e2ee else "not encrypted"))
        if not conn.chat_budget.take():
            raise SignalingError("chat-rate-limited", "You are sending messages too fast.")
        body = {"text": message.text} if message.text is not None else {"ciphertext": message.ciphertext}
        self.people.broadcast(reply("chat", **{
            "from": conn.participant.id, "name": conn.participant.name,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **body,
        }))

    def _hand(self, conn: Conn, message: Hand) -> None:
        assert conn.participant is not None
        if not conn.gesture_budget.take():
            raise SignalingError("rate-limited", "You are raising and lowering your hand too fast.")
        self._tell(self.room.raise_hand(conn.participant.id, message.raised))

    def _react(self, conn: Conn, message: React) -> None:
        assert conn.participant is not None
        if self.meeting.e2ee != (message.ciphertext is not None):
            raise SignalingError("bad-message", "this meeting's reactions are "
                                 + ("end-to-end encrypted" if self.meeting.e2ee else "not encrypted"))
        if not conn.gesture_budget.take():
            raise SignalingError("rate-limited", "You are sending reactions too fast.")
        body = {"emoji": message.emoji} if message.emoji is not None else {"ciphertext": message.ciphertext}
        self.people.broadcast(reply("reaction", **{"from": conn.participant.id, **body}))

    def _mute_answer(self, conn: Conn, message: MuteAnswer) -> None:
        assert conn.participant is not None
        ask = self._asks.answer(message.request, conn.participant.id)
        if ask is None:
            raise SignalingError("unknown-request", "That request is over: answered already, or too old.")
        self._close_ask(ask, "accepted" if message.accepted else "declined")

    def _close_ask(self, ask: Ask, answer: str) -> None:
        """Tell the host who asked what became of their request."""
        host = self._joined.get(ask.host)
        if host is not None:
            host.send(reply("mute-answer", request=ask.request, id=ask.target,
                            name=self.participant_name(ask.target), answer=answer))

    async def _ask_expired(self, request: str) -> None:
        async with self._lock:
            ask = self._asks.expire(request)
            if ask is not None:
                self._close_ask(ask, "no-answer")

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
        elif action == "ask-mute" and target in self._joined and target != conn.participant.id:
            ask = self._asks.ask(conn.participant.id, target, MUTE_ASK_SECONDS,
                                 lambda request: self._spawn(self._ask_expired(request)))
            if ask is None:
                raise SignalingError("mute-pending", "You asked already; their answer is on its way.")
            self._joined[target].send(reply("mute-request", by=conn.participant.name, request=ask.request))
        elif action == "mute-all":
            # Each page mutes itself and says who did it; people may unmute again.
            if not conn.mute_all_budget.take():
                raise SignalingError("rate-limited", "You muted everyone a moment ago.")
            self.people.broadcast(reply("muted", by=conn.participant.name), skip=conn.participant.id)
        elif action == "lower-hand" and target in self._joined:
            events = self.room.raise_hand(target, False)
            self._tell(events)
            if events and target != conn.participant.id:
                self._joined[target].send(reply("hand-lowered", by=conn.participant.name))
        elif action == "make-host" and target in self._joined and target != conn.participant.id:
            await self._hand_over(conn, target)
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

    async def _hand_over(self, conn: Conn, target: str) -> None:
        """Make ``target`` host in place of ``conn``'s participant; they get what hosts see."""
        assert conn.participant is not None
        giver = conn.participant
        if self.room.participants[target].is_host:
            raise SignalingError("already-host", f"{self.participant_name(target)} is a host already.")
        await self._publish_events(self.room.hand_over(giver.id, target))
        self._granted.discard(giver.id)
        self._granted.add(target)
        log.info("host role handed over %s", kv(meeting=ids.short(self.id)))
        made: dict[str, Any] = {"by": giver.name}
        if self.context.recordings is not None:
            made["recordings"] = await self.context.recordings.links(self.id)
        new_host = self._joined[target]
        new_host.send(reply("made-host", **made))
        new_host.send(lobby_message(self.room))

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
        self.people.broadcast(recording_message(status))
        self._refresh()
        if status.reason == STOP_DISK:
            self.people.to_hosts(reply("notice", text="Recording stopped: the server is low on disk space. "
                                                "What was recorded so far is kept."))
