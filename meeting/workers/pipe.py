"""The front <-> worker protocol: JSON lines over a local stream socket.

Every message is one JSON object with an ``op`` on one line. Front to worker: ``connect``,
``receive``, ``disconnect`` (a browser's signaling, by connection id), ``recording`` (a
request, answered by ``reply`` with the same ``req``), ``event`` (a bus event for the
meetings there), ``close`` (shut down). Worker to front: ``send`` and ``close-conn`` (what
the sessions say to a connection), ``event`` (presence, recordings), ``load`` (how busy it
is), ``reply``, ``ready``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

# A line holds one client message (64 KiB at most), or an offer with its SDP: far below this.
MAX_LINE = 4 * 1024 * 1024


class PipeClosed(ConnectionError):
    """The other side has gone."""


class Pipe:
    """One end of the socket pair: messages out in order, messages in one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def over(cls, sock: Any) -> "Pipe":
        """A pipe over a connected stream socket (one end of ``socket.socketpair()``)."""
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_LINE)
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message (the transport buffers; :meth:`drain` waits for it to go)."""
        if self.writer.is_closing():
            raise PipeClosed("the pipe is closed")
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except ConnectionError as exc:
            raise PipeClosed(str(exc)) from None

    async def read(self) -> dict[str, Any]:
        """The next message; raises PipeClosed at the end."""
        try:
            line = await self.reader.readline()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            raise PipeClosed(str(exc)) from None
        if not line:
            raise PipeClosed("the other side closed the pipe")
        message = json.loads(line)
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise PipeClosed("not a pipe message")
        return message

    def close(self) -> None:
        self.writer.close()
