"""Several servers delivering from one PostgreSQL outbox: every chat post goes out once."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import AsyncIterator

import pytest

from meeting.models import Origin
from meeting.outbox import ANNOUNCE, ChatPost, Delivered, Delivery, Outbox, OutboxEntry
from meeting.service import MeetingService
from meeting.store.postgres import PostgresStore
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
POSTS = 200


@pytest.fixture
async def node(pg_url: str) -> AsyncIterator[PostgresStore]:
    """The first server's store (it also enqueues the posts)."""
    store = PostgresStore(pg_url)
    await store.open()
    yield store
    await store.close()


async def _enqueue(store: PostgresStore, count: int = POSTS) -> list[str]:
    """``count`` due announcements over 20 meetings; returns their event keys."""
    service = MeetingService(store, "http://x")
    outbox = Outbox(store)
    meetings = [(await service.mint("m", Origin("slack", "T", f"C{i}", "A"))).meeting.id for i in range(20)]
    keys = []
    for i in range(count):
        key = f"announce:{meetings[i % 20]}:{i}"
        await outbox.put(key, meetings[i % 20], "slack", ANNOUNCE, {"n": i})
        keys.append(key)
    return keys


class LoggingCourier:
    """Records every delivery as (node, event key), in a log shared by all nodes."""

    platform = "slack"

    def __init__(self, name: str, log: list[tuple[str, str]], first_waits_for: asyncio.Event | None = None) -> None:
        self.name = name
        self.log = log
        self.first_waits_for = first_waits_for
        self.delivered = asyncio.Event()

    async def deliver(self, entry: OutboxEntry, post: ChatPost | None) -> Delivery:
        if self.first_waits_for is not None:
            # Hold this node's first delivery until the other node has delivered one, so both
            # certainly take part whatever the scheduling.
            await asyncio.wait_for(self.first_waits_for.wait(), 30)
            self.first_waits_for = None
        await asyncio.sleep(0)  # a network call would let the other node run here
        self.log.append((self.name, entry.event_key))
        self.delivered.set()
        return Delivered(ChatPost(entry.meeting_id, "slack", "C1", entry.event_key))


async def _states(store: PostgresStore) -> Counter[str]:
    return Counter(row[0] for row in await store.pool.fetch("SELECT state FROM outbox"))


async def test_two_nodes_deliver_200_posts_each_exactly_once(node: PostgresStore, pg_url: str) -> None:
    other = PostgresStore(pg_url)
    await other.open()
    keys = await _enqueue(node)
    log: list[tuple[str, str]] = []
    b_courier = LoggingCourier("b", log)
    a_courier = LoggingCourier("a", log, first_waits_for=b_courier.delivered)
    a, b = Outbox(node), Outbox(other)
    a.register(a_courier)
    b.register(b_courier)
    runs = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        async def settled() -> bool:
            return (await _states(node))["done"] == POSTS

        await wait_for(settled, timeout=60)
    finally:
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await other.close()
    delivered = Counter(key for _, key in log)
    assert sorted(delivered) == sorted(keys)
    assert set(delivered.values()) == {1}
    by_node = Counter(name for name, _ in log)
    assert by_node["a"] > 0 and by_node["b"] > 0, by_node
    assert await node.pool.fetchval("SELECT count(*) FROM outbox WHERE claimed_by IS NOT NULL") == 0


async def test_concurrent_claims_never_overlap(node: PostgresStore, pg_url: str) -> None:
    """Six servers claim small batches at once, settling each as they go, until none is left."""
    await _enqueue(node)
    stores = [node] + [PostgresStore(pg_url, max_connections=2) for _ in range(5)]
    for store in stores[1:]:
        await store.open()
    claimed: list[tuple[int, int]] = []

    async def claimer(index: int, store: PostgresStore) -> None:
        while entries := await store.outbox_due(1e12, ["slack"], 7):
            for entry in entries:
                claimed.append((index, entry.id))
                await store.outbox_finish(entry.id, entry.version, "done", "")

    try:
        await asyncio.wait_for(asyncio.gather(*(claimer(i, s) for i, s in enumerate(stores))), 60)
    finally:
        for store in stores[1:]:
            await store.close()
    ids = [entry_id for _, entry_id in claimed]
    assert len(ids) == POSTS and len(set(ids)) == POSTS
    assert (await _states(node))["done"] == POSTS


async def test_a_held_entry_is_not_taken_and_a_closed_store_lets_go_at_once(
        node: PostgresStore, pg_url: str) -> None:
    await _enqueue(node, 3)
    other = PostgresStore(pg_url)
    await other.open()
    try:
        held = await node.outbox_due(1e12, ["slack"], 2)
        assert len(held) == 2
        rest = await other.outbox_due(1e12, ["slack"], 10)
        assert {e.id for e in rest}.isdisjoint({e.id for e in held}) and len(rest) == 1
        await node.close()  # a server stopping: what it held is free for the others now
        taken = await other.outbox_due(1e12, ["slack"], 10)
        assert {e.id for e in taken} == {e.id for e in held} | {e.id for e in rest}
    finally:
        await other.close()


async def test_a_holder_whose_lease_lapsed_settles_nothing(node: PostgresStore, pg_url: str) -> None:
    await _enqueue(node, 1)
    other = PostgresStore(pg_url)
    await other.open()
    try:
        [entry] = await node.outbox_due(1e12, ["slack"], 10)
        # The holder stalls past its lease (a minute of the database's time passes).
        await node.pool.execute("UPDATE outbox SET claimed_until = claimed_until - interval '61 seconds'")
        [again] = await other.outbox_due(1e12, ["slack"], 10)
        assert again.id == entry.id
        await node.outbox_finish(entry.id, entry.version, "dropped", "late")
        assert (await _states(node)) == {"pending": 1}
        await other.outbox_finish(again.id, again.version, "done", "")
        assert (await _states(node)) == {"done": 1}
    finally:
        await other.close()


async def test_a_node_killed_mid_delivery_leaves_the_rest_to_the_other_each_once(
        node: PostgresStore, pg_url: str) -> None:
    keys = await _enqueue(node)
    dead = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.meeting.outbox_node", pg_url, "1", "30",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    first: list[str] = []
    held = ""
    try:
        assert dead.stdout is not None
        while not held:
            line = (await asyncio.wait_for(dead.stdout.readline(), 60)).decode().split()
            assert line, (await dead.stderr.read()).decode() if dead.stderr else "the node ended"
            if line[0] == "delivered":
                first.append(line[1])
            elif line[0] == "holding":
                held = line[1]
    finally:
        dead.send_signal(signal.SIGKILL)  # mid-delivery: no settling, no letting go
        await dead.wait()
    assert len(first) == 30
    # The dead node still holds its batch, the entry it was delivering among them.
    still_held = {row[0] for row in await node.pool.fetch(
        "SELECT event_key FROM outbox WHERE claimed_by IS NOT NULL AND state = 'pending'")}
    assert held in still_held

    log: list[tuple[str, str]] = []
    survivor = Outbox(node)
    survivor.register(LoggingCourier("survivor", log))

    async def all_done() -> bool:
        await survivor.deliver_due()
        return (await _states(node))["done"] == POSTS

    await wait_for(all_done, timeout=60)  # the dead node's one-second lease lapses meanwhile
    later = [key for _, key in log]
    assert set(first).isdisjoint(later)
    assert sorted(first + later) == sorted(keys)
    assert later.count(held) == 1
