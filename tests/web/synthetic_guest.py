"""A participant without a browser: the signaling protocol over the real websocket, media from
an aiortc peer sending pre-encoded VP8 and Opus. Cheaper than a fourth Chromium on a 2-core box."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

from aiohttp.test_utils import TestClient

from bench.synthetic import EncodedMedia, SyntheticParticipant, encoded_media
from tests.signaling_client import Socket, connect

_MEDIA: EncodedMedia | None = None


def _media() -> EncodedMedia:
    global _MEDIA
    if _MEDIA is None:  # encoded once per test process: 4:3, like many webcams
        _MEDIA = encoded_media(320, 240, fps=15, bitrate=200_000, seconds=2.0)
    return _MEDIA


class SyntheticGuest:
    """Joins a meeting by name, answers every offer as the page does, publishes mic and camera."""

    def __init__(self, socket: Socket, person: SyntheticParticipant) -> None:
        self.socket = socket
        self.person = person
        self.welcome: dict[str, Any] = {}
        self.answers = 0
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def join(cls, client: TestClient, meeting_id: str, name: str) -> "SyntheticGuest":
        socket = await connect(client, meeting_id)
        guest = cls(socket, SyntheticParticipant(name, _media(), decode=False, sources=("mic", "camera")))
        await socket.send({"type": "join", "name": name, "publish": ["mic", "camera"]})
        guest.welcome = await socket.next("welcome", timeout=10)
        guest.task = asyncio.ensure_future(guest._answer_offers())
        return guest

    async def _answer_offers(self) -> None:
        while True:
            offer = await self.socket.next("offer", timeout=3600)
            slots = [SimpleNamespace(**slot) for slot in offer["slots"]]
            sdp = await self.person.answer(SimpleNamespace(sdp=offer["sdp"], slots=slots))
            await self.socket.send({"type": "answer", "sdp": sdp})
            self.answers += 1

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        with contextlib.suppress(Exception):
            await self.socket.send({"type": "leave"})
        await self.socket.ws.close()
        await self.person.close()
