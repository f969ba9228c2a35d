from __future__ import annotations

import pytest

from meeting.models import Origin
from meeting.outbox import (
    ANNOUNCE, GIVE_UP_AFTER, STATUS, ChatPost, Delivered, Delivery, GiveUp, Outbox, OutboxEntry, Retry,
)
from meeting.service import MeetingService
from meeting.store.base import Store
from tests.stores import query, same_database


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class ScriptedCourier:
    """Answers each delivery with the next scripted result (then Delivered)."""

    platform = "slack"

    def __init__(self, *script: Delivery | Exception) -> None:
        self.script = list(script)
        self.calls: list[tuple[OutboxEntry, ChatPost | None]] = []

    async def deliver(self, entry: OutboxEntry, post: ChatPost | None) -> Delivery:
        self.calls.append((entry, post))
        result = self.script.pop(0) if self.script else None
        if isinstance(result, Exception):
            raise result
        if result is not None:
            return result
        if entry.kind == ANNOUNCE:
            return Delivered(ChatPost(entry.meeting_id, "slack", "C1", f"ts-{len(self.calls)}"))
        return Delivered()


@pytest.fixture
def store(each_store: Store) -> Store:
    """Every test here runs on both stores."""
    return each_store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def meeting_id(meetings: MeetingService) -> str:
    return (await meetings.mint("x", Origin("slack", "T", "C1", "Al"))).meeting.id


async def test_announce_is_delivered_once_even_if_enqueued_twice(store: Store, clock: Clock, meeting_id: str) -> None:
    outbox = Outbox(store, clock)
    courier = ScriptedCourier()
    outbox.register(courier)
    for _ in range(2):
        await outbox.put(f"announce:{meeting_id}:cmd1", meeting_id, "slack", ANNOUNCE, {"text": "hi"})
    assert await outbox.deliver_due() == 1
    assert await outbox.deliver_due() == 0
    assert len(courier.calls) == 1
    assert await store.get_post(meeting_id) == ChatPost(meeting_id, "slack", "C1", "ts-1")


async def test_rate_limit_retry_after_is_honoured(store: Store, clock: Clock, meeting_id: str) -> None:
    outbox = Outbox(store, clock)
    courier = ScriptedCourier(Retry("ratelimited", after=30))
    outbox.register(courier)
    await outbox.put("announce:a", meeting_id, "slack", ANNOUNCE, {})
    await outbox.deliver_due()
    clock.now += 29
    assert await outbox.deliver_due() == 0
    clock.now += 2
    assert await outbox.deliver_due() == 1
    assert len(courier.calls) == 2 and await store.get_post(meeting_id) is not None


async def test_errors_back_off_and_permanent_errors_drop(store: Store, clock: Clock, meeting_id: str, caplog) -> None:
    outbox = Outbox(store, clock)
    courier = ScriptedCourier(ConnectionError("reset"), GiveUp("not_in_channel"))
    outbox.register(courier)
    await outbox.put("announce:a", meeting_id, "slack", ANNOUNCE, {})
    await outbox.deliver_due()
    clock.now += 3
    await outbox.deliver_due()
    clock.now += 1000
    assert await outbox.deliver_due() == 0
    assert len(courier.calls) == 2
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and "not_in_channel" in drops[0].getMessage()
    assert meeting_id not in drops[0].getMessage()


async def test_gives_up_after_many_attempts(store: Store, clock: Clock, meeting_id: str) -> None:
    outbox = Outbox(store, clock)
    courier = ScriptedCourier(*[Retry("timeout", after=1)] * (GIVE_UP_AFTER + 5))
    outbox.register(courier)
    await outbox.put("announce:a", meeting_id, "slack", ANNOUNCE, {})
    for _ in range(GIVE_UP_AFTER + 5):
        await outbox.deliver_due()
        clock.now += 2
    assert len(courier.calls) == GIVE_UP_AFTER


async def test_status_waits_for_the_post_and_bursts_coalesce(store: Store, clock: Clock, meeting_id: str) -> None:
    outbox = Outbox(store, clock)
    courier = ScriptedCourier(Retry("network", after=5))
    outbox.register(courier)
    await outbox.put("announce:a", meeting_id, "slack", ANNOUNCE, {})
    for names in (["A"], ["A", "B"], ["A", "B", "C"]):
        await outbox.put_status(meeting_id, "slack", {"present": names})
    clock.now += 2
    await outbox.deliver_due()  # announce fails; status must wait for its message
    assert [e.kind for e, _ in courier.calls] == [ANNOUNCE]
    clock.now += 5
    await outbox.deliver_due()
    clock.now += 2
    await outbox.deliver_due()
    kinds = [(e.kind, e.payload) for e, _ in courier.calls]
    assert kinds[1:] == [(ANNOUNCE, {}), (STATUS, {"present": ["A", "B", "C"]})]
    status_post = courier.calls[-1][1]
    assert status_post is not None and status_post.message_ref == "ts-2"
    await outbox.put_status(meeting_id, "slack", {"present": []})
    clock.now += 2
    await outbox.deliver_due()
    assert courier.calls[-1][0].payload == {"present": []}


async def test_pending_entries_survive_a_restart(store: Store, clock: Clock) -> None:
    meeting_id = (await MeetingService(store, "http://x").mint("x", Origin("slack", "T", "C", "A"))).meeting.id
    first = Outbox(store, clock)
    failing = ScriptedCourier(Retry("ratelimited", after=10))
    first.register(failing)
    await first.put("announce:r", meeting_id, "slack", ANNOUNCE, {"text": "hello"})
    await first.deliver_due()
    await store.close()

    store = same_database(store)
    await store.open()
    second = Outbox(store, clock)
    courier = ScriptedCourier()
    second.register(courier)
    assert await second.deliver_due() == 0
    clock.now += 11
    assert await second.deliver_due() == 1
    assert await second.deliver_due() == 0
    assert [e.payload for e, _ in courier.calls] == [{"text": "hello"}]
    await store.close()


async def test_entries_for_unconfigured_platforms_wait(store: Store, clock: Clock, meeting_id: str) -> None:
    outbox = Outbox(store, clock)
    await outbox.put("announce:d", meeting_id, "discord", ANNOUNCE, {})
    outbox.register(ScriptedCourier())
    assert await outbox.deliver_due() == 0


async def test_the_backlog_counts_what_waits_and_the_age_of_the_oldest(
        store: Store, clock: Clock, meeting_id: str) -> None:
    outbox = Outbox(store, clock)
    assert await outbox.backlog() == {}
    await outbox.put("announce:w1", meeting_id, "discord", ANNOUNCE, {})
    clock.now += 30
    await outbox.put("announce:w2", meeting_id, "discord", ANNOUNCE, {})
    await outbox.put("announce:s1", meeting_id, "slack", ANNOUNCE, {})
    clock.now += 10
    assert await outbox.backlog() == {"discord": (2, 40.0), "slack": (1, 10.0)}
    outbox.register(ScriptedCourier())
    await outbox.deliver_due()
    assert await outbox.backlog() == {"discord": (2, 40.0)}


class RewritingCourier(ScriptedCourier):
    """Fails a status delivery while a newer status is written, as a burst of joins would."""

    def __init__(self, outbox: Outbox, meeting_id: str, result: Delivery) -> None:
        super().__init__()
        self.outbox, self.meeting_id, self.result = outbox, meeting_id, result

    async def deliver(self, entry: OutboxEntry, post: ChatPost | None) -> Delivery:
        if entry.kind == STATUS and entry.payload == {"present": ["A"]}:
            self.calls.append((entry, post))
            await self.outbox.put_status(self.meeting_id, "slack", {"present": ["A", "B"]})
            return self.result
        return await super().deliver(entry, post)


@pytest.mark.parametrize("result", [Delivered(), Retry("network", after=600)])
async def test_a_status_rewritten_during_delivery_is_still_sent(
    store: Store, clock: Clock, meeting_id: str, result: Delivery
) -> None:
    outbox = Outbox(store, clock)
    courier = RewritingCourier(outbox, meeting_id, result)
    outbox.register(courier)
    await outbox.put("announce:a", meeting_id, "slack", ANNOUNCE, {})
    await outbox.deliver_due()
    await outbox.put_status(meeting_id, "slack", {"present": ["A"]})
    clock.now += 2
    await outbox.deliver_due()
    clock.now += 2  # well before a retry of the old status would be due
    await outbox.deliver_due()
    assert [e.payload for e, _ in courier.calls if e.kind == STATUS] == [
        {"present": ["A"]}, {"present": ["A", "B"]}]


async def test_a_settled_announcement_keeps_no_reply_data(store: Store, clock: Clock, meeting_id: str) -> None:
    outbox = Outbox(store, clock)
    outbox.register(ScriptedCourier())
    reply = {"response_url": "https://hooks.example/secret"}
    await outbox.put("announce:a", meeting_id, "slack", ANNOUNCE, {"title": "t", "reply": reply})
    await outbox.deliver_due()
    [(payload,)] = await query(store, "SELECT payload FROM outbox")
    assert "hooks.example" not in payload and '"title"' in payload
