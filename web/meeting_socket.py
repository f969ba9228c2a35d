"""``GET /m/{id}/ws``: the signaling websocket, translated to and from the meeting's session.

Frames in become :meth:`Sessions.receive` calls; the session's messages come back through
a :class:`SocketChannel` and leave as frames, in order. Meeting state lives in the session
(:mod:`meeting.session`); this module keeps only what belongs to the socket: its message
budget, the per-address limits, and the heartbeat that notices a vanished browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

from aiohttp import WSMsgType, web

from meeting.ratelimit import TokenBucket
from meeting.session.messages import CLOSE_FINAL, MAX_MESSAGE_BYTES, error

from .keys import MEETINGS, SESSIONS, SOCKET_LIMITS

# aiohttp pings every HEARTBEAT s and drops a socket whose pong is late: a vanished
# browser is cleaned up within ~1.5 x HEARTBEAT.
HEARTBEAT = 3.0
# Messages a socket may hold queued for a browser that does not read them (~ a minute of
# a busy meeting); past that it is too far behind to be useful and is closed.
MAX_QUEUED = 2000


class SocketChannel:
    """A websocket as a session's channel: messages queued in order, written by one task."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._queue: asyncio.Queue[dict[str, Any] | tuple[int, str]] = asyncio.Queue()
        self._closing = False
        self._writer = asyncio.ensure_future(self._write())

    def send(self, message: dict[str, Any]) -> None:
        if self._closing:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            self.close(CLOSE_FINAL, "too far behind")
            return
        self._queue.put_nowait(message)

    def close(self, code: int, reason: str) -> None:
        if not self._closing:
            self._closing = True
            self._queue.put_nowait((code, reason))

    async def _write(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, tuple):
                await self.ws.close(code=item[0], message=item[1].encode())
                return
            if self.ws.closed:
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_json(item)

    async def finish(self) -> None:
        """Write what is queued (the last goodbye), then stop."""
        self.close(CLOSE_FINAL, "closed")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._writer), timeout=HEARTBEAT)
        self._writer.cancel()


async def meeting_socket(request: web.Request) -> web.StreamResponse:
    """The signaling websocket of a meeting."""
    meeting = await request.app[MEETINGS].get(request.match_info["meeting_id"])
    if meeting is None:
        raise web.HTTPNotFound()
    limits = request.app[SOCKET_LIMITS]
    sessions = request.app[SESSIONS]
    address = request.remote or ""
    # aiohttp's own cap sits above ours so an oversized message gets an error reply, not a drop;
    # one over four times ours is not read at all: the socket closes with 1009 (message too big).
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=4 * MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    channel = SocketChannel(ws)
    if not await limits.connects.allow(address):
        channel.send(error("rate-limited", "Too many join attempts from your address; wait a moment."))
        await channel.finish()
        return ws
    conn_id = secrets.token_urlsafe(12)
    budget = TokenBucket(limits.rate_per_second, limits.rate_burst)
    await sessions.connect(meeting, conn_id, address, channel)
    try:
        async for frame in ws:
            if not (budget.take() and limits.messages.take(address)):
                channel.send(error("rate-limited", "too many messages; slow down"))
            elif frame.type == WSMsgType.TEXT:
                await sessions.receive(conn_id, frame.data)
            elif frame.type == WSMsgType.BINARY:
                channel.send(error("bad-message", "binary frames are not part of the protocol"))
    finally:
        # aiohttp may cancel a handler whose client vanished (its test server does, and so does
        # handler_cancellation=True); the goodbye must still finish.
        await asyncio.shield(sessions.disconnect(conn_id))
        await asyncio.shield(channel.finish())
    return ws
