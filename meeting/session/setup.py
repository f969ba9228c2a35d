"""Setting up a participant's connection: deadlines for joining and for media, the peer
connection, its offers and its state.

:class:`ConnectionSetup` is part of :class:`meeting.session.session.MeetingSession`, kept in
its own module for size, as :mod:`meeting.session.actions` is: its methods use the session's
state and lock (declared below for readers and checkers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from meeting import ids
from meeting.logfmt import kv
from meeting.media.offer import Offer
from meeting.media.sfu import MediaRoom, RoomFullError
from meeting.session import messages as msg
from meeting.session.conn import JOINED, NEW, Conn
from meeting.session.messages import reply
from meeting.session.room import Participant, Room

log = logging.getLogger(__name__)


class ConnectionSetup:
    """A connection's way in: deadlines, its peer connection and offers (see the module)."""

    if TYPE_CHECKING:
        id: str
        room: Room
        media: MediaRoom
        _lock: asyncio.Lock

        async def _drop(self, conn: Conn, barred: bool) -> None: ...
        def _spawn(self, coroutine: Any) -> None: ...

    async def _retry_later(self, conn: Conn, code: str, text: str, reason: str) -> None:
        """Tell the browser why, close its connection so that it joins afresh, and drop it."""
        conn.send(msg.error(code, text))
        conn.channel.close(msg.CLOSE_RETRY, reason)
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
        await self._retry_later(conn, f"{what}-timeout",
                                "The connection took too long to set up. Reload to try again.", f"{what} timeout")

    async def _connect_media(self, conn: Conn, participant: Participant) -> None:
        """Give a participant who just entered their peer connection (outside the lock)."""
        assert conn.media_pending is not None
        try:
            peer = await self.media.join(
                participant.id, lambda offer: self._send_offer(conn, offer),
                publish=sorted(participant.publishes), on_state=lambda state: self._peer_state(conn, state),
                on_paused=lambda who, source, paused: conn.send(
                    reply("video-paused", participant=who, source=source, paused=paused)),
            )
        except Exception as exc:
            gone = not _still_joined(conn, participant)
            # A full media room, or a participant gone while its peer was set up (the peer was
            # closed under it), is no bug: no traceback.
            if isinstance(exc, RoomFullError) or gone:
                log.info("media join refused %s", kv(meeting=ids.short(self.id), why=type(exc).__name__))
            else:
                log.exception("media join failed %s", kv(meeting=ids.short(self.id)))
            peer = None
        async with self._lock:
            conn.media_pending.set()
            conn.media_pending = None
            if not _still_joined(conn, participant):
                # Removed, or gone, while the media was being set up: no orphan peer.
                await self.media.leave(participant.id)
            elif peer is None:
                await self._retry_later(conn, "media-failed", "The server could not set up your media.",
                                        "media failed")
            else:
                conn.peer = peer

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
            await self._retry_later(conn, "media-failed", "The media connection failed.", "media failed")


def _still_joined(conn: Conn, participant: Participant) -> bool:
    """Whether ``conn`` is still in the meeting as ``participant``: by id, as the record is
    replaced whenever it changes (mute, hand...)."""
    return conn.state == JOINED and conn.participant is not None and conn.participant.id == participant.id
