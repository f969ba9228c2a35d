"""A test-side participant speaking the signaling protocol over a real websocket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from tests.conftest import wait_for


class Socket:
    """A test-side participant: a websocket plus its received messages by type."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                self.inbox.append(json.loads(frame.data))

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def next(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        await wait_for(lambda: any(m["type"] == kind for m in self.inbox), timeout)
        index = next(i for i, m in enumerate(self.inbox) if m["type"] == kind)
        return self.inbox.pop(index)

    async def error(self, timeout: float = 5.0) -> str:
        return (await self.next("error", timeout))["code"]


async def connect(client: TestClient, meeting_id: str) -> Socket:
    return Socket(await client.ws_connect(f"/m/{meeting_id}/ws"))


async def join(client: TestClient, meeting_id: str, name: str,
               host_key: str | None = None) -> tuple[Socket, dict[str, Any]]:
    socket = await connect(client, meeting_id)
    await socket.send({"type": "join", "name": name, **({"host_key": host_key} if host_key else {})})
    return socket, await socket.next("welcome")
