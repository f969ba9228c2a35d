"""A media plane without media: records what meeting sessions ask of it.

Tests of the web and chat layers use it where no media flows, and so does the ``/meetnow``
benchmark (bench/command.py), which needs a server but no peer connections.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from meeting.media.offer import CandidateError, Offer, SdpError, TrackSlot


class FakePeer:
    def __init__(self, participant_id: str) -> None:
        self.participant_id = participant_id
        self.answers: list[str] = []
        self.candidates: list[str] = []
        self.sources: set[str] = set()
        self.tiles: dict[tuple[str, str], tuple[int, int]] = {}

    async def accept_answer(self, sdp: str) -> None:
        if "bad" in sdp:
            raise SdpError("unusable answer")
        self.answers.append(sdp)

    async def add_candidate(self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None:
        if "bad" in candidate:
            raise CandidateError("unparsable candidate")
        self.candidates.append(candidate)

    def set_tiles(self, tiles: dict[tuple[str, str], tuple[int, int]]) -> None:
        self.tiles = dict(tiles)

    async def publish(self, source: str) -> None:
        self.sources.add(source)

    async def unpublish(self, source: str) -> None:
        self.sources.discard(source)


class FakeMediaRoom:
    """One meeting's fake media: records joins and leaves, offers one slot per join."""

    def __init__(self, sfu: FakeSfu, room_id: str) -> None:
        self.sfu = sfu
        self.id = room_id

    async def join(self, participant_id: str, send_offer: Callable[[Offer], Awaitable[None]],
                   publish: Any = (), on_state: Any = None, on_paused: Any = None) -> FakePeer:
        await self.sfu.gate.wait()
        peer = self.sfu.peers[self.id, participant_id] = FakePeer(participant_id)
        slot = TrackSlot(mid="0", kind="audio", source="mic", direction="publish", participant=participant_id)
        await send_offer(Offer(sdp="v=0\r\n", slots=(slot,)))
        if on_state is not None:
            on_state("connected")  # no media to wait for
        return peer

    async def leave(self, participant_id: str) -> None:
        self.sfu.left.append(participant_id)
        self.sfu.peers.pop((self.id, participant_id), None)

    def observe(self, observer: Any) -> None:
        self.sfu.observed[self.id] = observer

    def unobserve(self) -> None:
        self.sfu.observed.pop(self.id, None)

    async def close(self) -> None:
        self.unobserve()
        for key in [k for k in self.sfu.peers if k[0] == self.id]:
            del self.sfu.peers[key]
        self.sfu.rooms.pop(self.id, None)


class FakeSfu:
    """Records what sessions ask of the media plane."""

    def __init__(self) -> None:
        self.peers: dict[tuple[str, str], FakePeer] = {}
        self.left: list[str] = []
        self.observed: dict[str, Any] = {}  # room id -> the recorder tapping it
        self.rooms: dict[str, FakeMediaRoom] = {}
        self.turn = None  # no TURN credentials to mint
        self.gate = asyncio.Event()  # clear it to hold joins, as a slow media set-up would
        self.gate.set()

    def open(self, room_id: str) -> FakeMediaRoom:
        return self.rooms.setdefault(room_id, FakeMediaRoom(self, room_id))

    async def close(self) -> None:
        self.peers.clear()
