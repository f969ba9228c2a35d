"""Fixtures for the media-plane tests: an SFU on loopback and synthetic participants."""

from __future__ import annotations

import random
from typing import AsyncIterator, Callable

import pytest

from meeting.config import MediaConfig
from meeting.media.sfu import Sfu
from bench.synthetic import EncodedMedia, SyntheticParticipant, encoded_media

LOOPBACK = MediaConfig(announce_addresses=("127.0.0.1",), allowed_peer_networks=("127.0.0.0/8",))


@pytest.fixture(scope="session")
def media() -> EncodedMedia:
    """320x240 VP8 (one keyframe per 4 s loop) and Opus, encoded once per session."""
    return encoded_media(320, 240, fps=30, bitrate=300_000, seconds=4.0)


class Meeting:
    """An SFU plus the synthetic participants joined to it, cleaned up at the end."""

    def __init__(self, sfu: Sfu, media: EncodedMedia) -> None:
        self.sfu = sfu
        self.media = media
        self.people: dict[str, SyntheticParticipant] = {}

    async def join(
        self, name: str, room: str = "room", publish: tuple[str, ...] = ("mic", "camera"), **kwargs
    ) -> SyntheticParticipant:
        person = SyntheticParticipant(name, self.media, **kwargs)
        self.people[name] = person
        person.peer = await self.sfu.open(room).join(name, person.send_offer, publish=publish)
        return person

    async def leave(self, name: str, room: str = "room") -> None:
        await self.sfu.open(room).leave(name)
        person = self.people.pop(name)
        await person.close()

    async def close(self) -> None:
        await self.sfu.close()
        for person in self.people.values():
            await person.close()


@pytest.fixture
async def meeting_factory(media: EncodedMedia) -> AsyncIterator[Callable[..., Meeting]]:
    made: list[Meeting] = []

    def make(config: MediaConfig = LOOPBACK, receive_loss: float = 0.0, seed: int = 1) -> Meeting:
        m = Meeting(Sfu(config, receive_loss=receive_loss, rng=random.Random(seed)), media)
        made.append(m)
        return m

    yield make
    for m in made:
        await m.close()


@pytest.fixture
async def meeting(meeting_factory: Callable[..., Meeting]) -> Meeting:
    return meeting_factory()
