"""Live meetings on media worker processes: spread, relayed, and back after a worker dies.

The front runs in the test (a real aiohttp server); the two workers are real processes.
Participants are synthetic aiortc peers speaking the signaling protocol over websockets and,
like the page, reconnecting when the server closes their socket with a retry code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from bench.synthetic import SyntheticParticipant
from meeting.config import Config
from meeting.events import PresenceChanged
from meeting.models import Origin
from meeting.recording.model import COMPOSING, RECORDING
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.conftest import serving, wait_for
from tests.web.synthetic_guest import _media
from meeting.ratelimit import LocalLimiter
from web.keys import SESSIONS, SOCKET_LIMITS

FINAL = 4000


class ReturningGuest:
    """A synthetic participant that rejoins by itself when its socket closes with a retry code."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.person: SyntheticParticipant | None = None
        self.joins = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.task = asyncio.ensure_future(self._run())
        self.leaving = False

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while not self.leaving:
                self.person = SyntheticParticipant(self.name, _media(), decode=False, sources=("mic", "camera"))
                try:
                    code = await self._session(http)
                finally:
                    await self.person.close()
                if code == FINAL or self.leaving:
                    return
                await asyncio.sleep(0.5)  # the page waits as long before its first retry

    async def _session(self, http: aiohttp.ClientSession) -> int | None:
        assert self.person is not None
        async with http.ws_connect(self.url) as ws:
            self.ws = ws
            await ws.send_json({"type": "join", "name": self.name, "publish": ["mic", "camera"]})
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    break
                message = frame.json()
                if message["type"] == "welcome":
                    self.joins += 1
                elif message["type"] == "offer" and not self.leaving:
                    slots = [SimpleNamespace(**slot) for slot in message["slots"]]
                    sdp = await self.person.answer(SimpleNamespace(sdp=message["sdp"], slots=slots))
                    await ws.send_json({"type": "answer", "sdp": sdp})
            return ws.close_code

    def video_frames(self) -> int:
        person = self.person
        if person is None:
            return 0
        return sum(stream.frames for mid, stream in list(person.received.items())
                   if mid in person.slots and person.slots[mid].kind == "video")

    async def leave(self) -> None:
        self.leaving = True  # offers that still arrive (others leaving) go unanswered
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.send_json({"type": "leave"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.task, 10)


async def media_rises(guests: list[ReturningGuest], frames: int = 15, timeout: float = 10.0) -> None:
    """Every guest decodes ``frames`` more video frames within ``timeout`` seconds."""
    start = {g.name: g.video_frames() for g in guests}
    await wait_for(lambda: all(g.video_frames() >= start[g.name] + frames for g in guests), timeout)


async def test_meetings_spread_over_two_workers_and_come_back_after_one_is_killed(
        config: Config, store: SqliteStore, meetings: MeetingService) -> None:
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, workers=2))
    async with serving(config, store) as (client, server):
        await server.sessions.start()
        # Every synthetic participant comes from 127.0.0.1: let their rejoins through.
        client.server.app[SOCKET_LIMITS].connects = LocalLimiter(100.0, 100.0)
        ended: dict[str, int] = {}

        async def count_ends(event: PresenceChanged) -> None:
            if event.ended_minutes is not None:
                ended[event.meeting_id] = ended.get(event.meeting_id, 0) + 1

        server.bus.subscribe(PresenceChanged, count_ends)
        minted = [await meetings.mint(f"Room {n}", Origin("web")) for n in range(4)]
        guests: dict[str, list[ReturningGuest]] = {}
        for m in minted:
            url = str(client.make_url(f"/m/{m.meeting.id}/ws")).replace("http://", "ws://")
            guests[m.meeting.id] = [ReturningGuest(url, f"{m.meeting.title} {who}") for who in ("A", "B")]
        everyone = [g for pair in guests.values() for g in pair]
        await wait_for(lambda: all(g.joins == 1 for g in everyone), 20)
        await media_rises(everyone, timeout=20)

        # Spread: the server's own stats put two meetings on each worker.
        stats = client.server.app[SESSIONS].stats()
        assert sorted(w["meetings"] for w in stats["workers"]) == [2, 2], stats
        pool = server.sessions
        victim = pool.workers[0]
        doomed = set(victim.meetings)
        spared = [g for mid, pair in guests.items() if mid not in doomed for g in pair]
        returning = [g for mid, pair in guests.items() if mid in doomed for g in pair]
        await wait_for(lambda: victim.load.get("pid"), 5)
        # One of the doomed meetings is being recorded when its worker dies.
        recorded = next(m for m in minted if m.meeting.id in doomed)
        response = await client.post(f"/api/meetings/{recorded.meeting.id}/recording", json={"action": "start"},
                                     headers={"Authorization": "Bearer " + recorded.host_url.split("#host=")[1]})
        assert response.status == 200, await response.text()
        [(recording, _)] = await store.all_recordings()
        assert recording.state == RECORDING

        os.kill(victim.load["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        # Back with media within 10 s, on whichever worker takes them.
        await wait_for(lambda: all(g.joins == 2 for g in returning), 10)
        await media_rises(returning, frames=5, timeout=10 - (time.monotonic() - killed_at))
        print(f"back with media {time.monotonic() - killed_at:.1f} s after the kill")
        # The other worker's meetings were not disturbed: same sockets, media still rising.
        assert all(g.joins == 1 for g in spared)
        await media_rises(spared, frames=15)
        assert ended == {}  # nobody was told the moved meetings ended
        # The dead worker's recording is settled as after a crash: composed from what it wrote.
        assert (await store.get_recording(recording.id)).state == COMPOSING  # type: ignore[union-attr]

        for guest in everyone:
            await guest.leave()
        await wait_for(lambda: len(ended) == 4, 15)
        # The moved meetings are no longer orphans: their worker's death ends nothing later.
        assert pool.ledger.orphans() == 0 and pool.ledger.live() == 0
        assert ended == {m.meeting.id: 1 for m in minted}
        # A replacement worker is serving again.
        await wait_for(lambda: victim.alive and victim.ready.is_set(), 15)
        assert pool.restarts == 1

        # A meeting emptied a moment ago goes back to the worker that hosted it last (where
        # its session left what returning pages need), not to the idle replacement.
        survivor = pool.workers[1]
        meeting_id = minted[0].meeting.id
        url = str(client.make_url(f"/m/{meeting_id}/ws")).replace("http://", "ws://")
        async with aiohttp.ClientSession() as http, http.ws_connect(url):
            await wait_for(lambda: survivor.meetings.get(meeting_id) == 1, 5)
            assert meeting_id not in victim.meetings
