"""Stand-ins used across test packages."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from meeting.media.sfu import CandidateError, Offer, SdpError, TrackSlot


class FakePeer:
    def __init__(self, participant_id: str) -> None:
        self.participant_id = participant_id
        self.answers: list[str] = []
        self.candidates: list[str] = []
        self.sources: set[str] = set()

    async def accept_answer(self, sdp: str) -> None:
        if "bad" in sdp:
            raise SdpError("unusable answer")
        self.answers.append(sdp)

    async def add_candidate(self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None:
        if "bad" in candidate:
            raise CandidateError("unparsable candidate")
        self.candidates.append(candidate)


    async def publish(self, source: str) -> None:
        self.sources.add(source)

    async def unpublish(self, source: str) -> None:
        self.sources.discard(source)


class FakeSfu:
    """Records what signaling asks of the media plane; offers one slot per call."""

    def __init__(self) -> None:
        self.peers: dict[tuple[str, str], FakePeer] = {}
        self.left: list[str] = []
        self.gate = asyncio.Event()  # clear it to hold joins, as a slow media set-up would
        self.gate.set()

    async def join(self, room_id: str, participant_id: str,
                   send_offer: Callable[[Offer], Awaitable[None]], publish: Any = (), on_state: Any = None) -> FakePeer:
        await self.gate.wait()
        peer = self.peers[room_id, participant_id] = FakePeer(participant_id)
        slot = TrackSlot(mid="0", kind="audio", source="mic", direction="publish", participant=participant_id)
        await send_offer(Offer(sdp="v=0\r\n", slots=(slot,)))
        return peer

    async def leave(self, room_id: str, participant_id: str) -> None:
        self.left.append(participant_id)
        self.peers.pop((room_id, participant_id), None)

    async def close(self) -> None:
        self.peers.clear()
