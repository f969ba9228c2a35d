"""Serving connections whose websockets live in another process or on another machine.

A media worker (for its front) and a cluster node (for the node that took a browser's
websocket) receive the same three kinds of message per connection: ``connect``, ``receive``
and ``disconnect``. :class:`RelayedConnections` hands them to this process's live meetings,
each connection's messages in order and connections in parallel, as the websocket handler
does for local sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from meeting.models import Meeting
from meeting.session.conn import Channel
from meeting.session.host import LiveMeetings
from meeting.session.messages import CLOSE_FINAL, CLOSE_RETRY

# Messages one connection may have waiting; past that it is flooding or stuck.
MAX_PENDING = 1000

ChannelFor = Callable[[dict[str, Any]], Channel]
MeetingLookup = Callable[[str], Awaitable[Meeting | None]]


class RelayedConnections:
    """Connections relayed from elsewhere, each served by its own ordered queue."""

    def __init__(self, meetings: LiveMeetings, lookup: MeetingLookup, channel_for: ChannelFor) -> None:
        self.meetings = meetings
        self.lookup = lookup  # a meeting by id (from the store)
        self.channel_for = channel_for  # the way back to a connection, from its connect message
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._channels: dict[str, Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def handle(self, message: dict[str, Any]) -> None:
        """Queue one ``connect``, ``receive`` or ``disconnect`` message."""
        conn_id = message["conn"]
        queue = self._queues.get(conn_id)
        if queue is None:
            if message["op"] != "connect":
                return  # a connection this process no longer knows
            queue = self._queues[conn_id] = asyncio.Queue()
            self._channels[conn_id] = self.channel_for(message)
            task = asyncio.ensure_future(self._serve(conn_id, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if queue.qsize() >= MAX_PENDING:
            self._channels[conn_id].close(CLOSE_RETRY, "too many messages")
            message = {"op": "disconnect", "conn": conn_id}
        queue.put_nowait(message)

    def connections(self) -> list[str]:
        return list(self._queues)

    async def _serve(self, conn_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        channel = self._channels[conn_id]
        try:
            while True:
                message = await queue.get()
                op = message["op"]
                if op == "connect":
                    meeting = await self.lookup(message["meeting"])
                    if meeting is None:
                        channel.close(CLOSE_FINAL, "no such meeting")
                        return
                    await self.meetings.connect(meeting, conn_id, message["address"], channel)
                elif op == "receive":
                    await self.meetings.receive(conn_id, message["text"])
                else:
                    await self.meetings.disconnect(conn_id)
                    return
        finally:
            self._queues.pop(conn_id, None)
            self._channels.pop(conn_id, None)

    async def drop_all(self) -> None:
        """Every relayed connection is gone (the process that held their sockets died)."""
        for conn_id in list(self._queues):
            self.handle({"op": "disconnect", "conn": conn_id})
