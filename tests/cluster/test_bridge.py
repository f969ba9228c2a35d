"""Two nodes sharing a real Redis (and a store): one meeting across both, node death, Redis restart.

The nodes are two complete servers (``build_server``) in this process, each on its own HTTP
port, with a stand-in media plane; signaling between them goes through Redis for real.
"""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import AsyncExitStack
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from redis.exceptions import RedisError

from meeting.cluster.leader import Leadership
from meeting.cluster.limits import SharedLimiter
from meeting.cluster.nodes import PREFIX as NODE_PREFIX
from meeting.config import ClusterConfig, Config
from meeting.events import PresenceChanged
from meeting.models import Origin
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.conftest import room_of, serving, wait_for
from bench.fake_sfu import FakeSfu
from tests.servers import RedisServer
from tests.signaling_client import join
from web.server import Server


@pytest.fixture
def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


class Node:
    def __init__(self, client: TestClient, server: Server) -> None:
        self.client = client
        self.server = server
        self.presence: list[PresenceChanged] = []
        server.bus.subscribe(PresenceChanged, self._seen)

    async def _seen(self, event: PresenceChanged) -> None:
        self.presence.append(event)


@pytest.fixture
async def nodes(config: Config, redis_server: RedisServer) -> AsyncIterator[list[Node]]:
    config = dataclasses.replace(config, cluster=ClusterConfig(redis_url=redis_server.url))
    async with AsyncExitStack() as stack:
        made = []
        for name in ("a", "b"):
            store = SqliteStore(config.store.path)  # one file, a connection per node
            await store.open()
            stack.push_async_callback(store.close)
            node_config = dataclasses.replace(config, cluster=dataclasses.replace(config.cluster, node_id=name))
            client, server = await stack.enter_async_context(serving(node_config, store, sfu=FakeSfu()))
            await server.sessions.start()
            made.append(Node(client, server))
        await wait_for(lambda: all(len(n.server.sessions.nodes.alive) == 2 for n in made), 10)
        yield made


async def test_one_meeting_across_two_nodes_and_its_status_told_once(nodes: list[Node],
                                                                     meetings: MeetingService) -> None:
    a, b = nodes
    minted = await meetings.mint("Across", Origin("web"))
    ann, ann_welcome = await join(a.client, minted.meeting.id, "Ann")
    ben, ben_welcome = await join(b.client, minted.meeting.id, "Ben")  # relayed to the hosting node
    assert [p["name"] for p in ben_welcome["participants"]] == ["Ann"]
    assert (await ann.next("participant-joined"))["participant"]["name"] == "Ben"
    await ben.next("offer")  # the hosting node's media plane offered, through the relay
    host = a if room_of(a.client, minted.meeting.id) is not None else b
    other = b if host is a else a
    assert room_of(other.client, minted.meeting.id) is None  # one live session, on one node
    assert sorted(p.name for p in room_of(host.client, minted.meeting.id).participants.values()) == ["Ann", "Ben"]
    # Chat, in both directions across the nodes.
    await ben.send({"type": "chat", "text": "hello from b"})
    assert (await ann.next("chat"))["text"] == "hello from b"
    await ben.send({"type": "leave"})
    await ann.next("participant-left")
    await ann.send({"type": "leave"})
    await wait_for(lambda: any(e.ended_minutes for e in host.presence), 5)
    # Presence is told by the hosting node alone, once per change.
    assert other.presence == []
    assert [e.present for e in host.presence] == [("Ann",), ("Ann", "Ben"), ("Ann",), ()]
    assert sum(1 for e in host.presence if e.ended_minutes) == 1


async def test_a_dead_node_sends_its_relayed_browsers_back_and_a_restarted_redis_heals(
        nodes: list[Node], meetings: MeetingService, redis_server: RedisServer) -> None:
    a, b = nodes
    minted = await meetings.mint("Fragile", Origin("web"))
    ann, _ = await join(a.client, minted.meeting.id, "Ann")
    ben, _ = await join(b.client, minted.meeting.id, "Ben")
    host = a if room_of(a.client, minted.meeting.id) is not None else b
    other = b if host is a else a
    remote_socket = ben if other is b else ann

    # Redis restarts: the meeting goes on, heartbeats and the meeting's lease come back.
    await redis_server.restart()
    redis = Redis.from_url(redis_server.url)
    try:
        async def healed() -> bool:
            nodes_back = [k async for k in redis.scan_iter(match=NODE_PREFIX + "*")]
            return len(nodes_back) == 2 and await redis.exists(f"meetnow:meeting:{minted.meeting.id}") == 1
        await wait_for(healed, 10)

        async def relayed_again() -> bool:
            # As the page does every few seconds: a ping lost while Redis was away is not answered.
            await remote_socket.send({"type": "ping"})
            await asyncio.sleep(0.2)
            return any(m["type"] == "pong" for m in remote_socket.inbox)
        await wait_for(relayed_again, 10, interval=0.3)

        # The hosting node dies (its heartbeat stops): the other node sends its browser back.
        for task in host.server.sessions._tasks:
            task.cancel()
        await redis.delete(NODE_PREFIX + host.server.sessions.node_id)
        error = await remote_socket.next("error", timeout=15)
        assert error["code"] == "server-restarted"
        await wait_for(lambda: remote_socket.ws.closed, 5)
        assert remote_socket.ws.close_code == 4001  # the page rejoins by itself
        # Its rejoin lands on the surviving node, which now hosts the meeting.
        back, welcome = await join(other.client, minted.meeting.id, "Back")
        assert welcome["participants"] == []
        assert room_of(other.client, minted.meeting.id) is not None
    finally:
        await redis.aclose()


async def test_one_leader_at_a_time_and_a_takeover(redis_server: RedisServer) -> None:
    redis = Redis.from_url(redis_server.url)
    held: list[str] = []

    def leader(name: str) -> Leadership:
        async def elected() -> None:
            held.append(name)

        async def lost() -> None:
            held.remove(name)

        return Leadership(redis, "bots", name, elected, lost)

    first, second = leader("one"), leader("two")
    one = asyncio.ensure_future(first.run())
    await wait_for(lambda: held == ["one"], 5)
    two = asyncio.ensure_future(second.run())
    await asyncio.sleep(0)
    one.cancel()  # a clean stop gives the lead back at once
    await asyncio.gather(one, return_exceptions=True)
    await wait_for(lambda: held == ["two"], 8)
    two.cancel()
    await asyncio.gather(two, return_exceptions=True)
    await redis.aclose()


async def test_a_restarted_redis_leaves_the_leader_leading(redis_server: RedisServer) -> None:
    redis = Redis.from_url(redis_server.url)
    events: list[str] = []

    async def elected() -> None:
        events.append("elected")

    async def lost() -> None:
        events.append("lost")

    leadership = Leadership(redis, "bots", "one", elected, lost)
    running = asyncio.ensure_future(leadership.run())
    await wait_for(lambda: events == ["elected"], 5)
    await redis_server.restart()  # forgets the lease

    async def lease_back() -> bool:
        try:
            return await redis.get("meetnow:leader:bots") == b"one"
        except RedisError:
            return False  # this client reconnects on its next command
    await wait_for(lease_back, 10, interval=0.2)
    assert events == ["elected"]  # never dropped: the bots' connections were not cut
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    await redis.aclose()


async def test_rate_limits_are_shared_by_nodes(redis_server: RedisServer) -> None:
    first, second = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    limits = [SharedLimiter(first, "join", rate=0.001, burst=4), SharedLimiter(second, "join", rate=0.001, burst=4)]
    allowed = [await limits[i % 2].allow("198.51.100.7") for i in range(8)]
    assert allowed == [True] * 4 + [False] * 4  # one budget, whichever node asks
    assert await limits[0].allow("198.51.100.8")  # another address has its own
    await first.aclose()
    await second.aclose()
