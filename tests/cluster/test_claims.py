"""Which node composes a recording: a claim in a real Redis, kept while composing, given back
after, lapsing when its node dies, and refused (never granted twice) while Redis is away."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest
from redis.asyncio import Redis

from meeting.cluster import claims
from meeting.cluster.claims import SharedComposeClaims
from tests.conftest import wait_for
from tests.servers import RedisServer

TTL_MS = 1000  # short leases, so renewals and lapses happen within the test


@pytest.fixture
def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
async def two(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[SharedComposeClaims]]:
    monkeypatch.setattr(claims, "TTL_MS", TTL_MS)
    connections = [Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)]
    yield [SharedComposeClaims(connections[0], "a-1"), SharedComposeClaims(connections[1], "b-1")]
    for redis in connections:
        await redis.aclose()


async def test_one_node_composes_a_recording_and_keeps_it_until_done(two: list[SharedComposeClaims]) -> None:
    a, b = two
    async with a.hold("rec1") as first:
        assert first
        # Held for several lease lengths: renewed, so the other node never gets it.
        for _ in range(3):
            async with b.hold("rec1") as second:
                assert not second
            await asyncio.sleep(TTL_MS / 1000)  # one lease length between tries
        async with b.hold("rec2") as other_recording:
            assert other_recording  # another recording is free
    async with b.hold("rec1") as after:
        assert after  # given back when done


async def test_a_claim_lapses_when_its_node_dies(two: list[SharedComposeClaims], redis_server: RedisServer) -> None:
    a, b = two
    dying = Redis.from_url(redis_server.url)
    await dying.set("meetnow:compose:rec1", "c-1", px=TTL_MS)  # a node that died while composing
    await dying.aclose()
    async with a.hold("rec1") as taken:
        assert not taken

    async def free() -> bool:
        async with b.hold("rec1") as ours:
            return ours
    await wait_for(free, timeout=5, interval=0.1)


async def test_no_claim_while_redis_is_away(two: list[SharedComposeClaims], redis_server: RedisServer) -> None:
    a, _ = two
    redis_server.stop()
    async with a.hold("rec1") as ours:
        assert not ours  # left for the next rescan, never composed twice
