"""Live meeting sessions without sockets: messages in through Sessions, messages out on channels."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from meeting.events import Bus, PresenceChanged
from meeting.models import Meeting, Origin
from meeting.session import resume as resume_module
from meeting.session.context import SessionContext
from meeting.session.host import Sessions
from meeting.session.limits import ServerLimits
from meeting.session.messages import CLOSE_FINAL, CLOSE_RETRY, SERVER_SCHEMA
from bench.fake_sfu import FakeSfu
from tests.meeting.waiting import wait_for

HOST_KEY = "the-host-key"


class ListChannel:
    """A connection's channel that keeps what it was told, checking every message's schema."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send(self, message: dict[str, Any]) -> None:
        assert message["type"] in SERVER_SCHEMA
        json.dumps(message)  # plain, serializable values only
        self.messages.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]


class Hosts:
    async def is_host(self, meeting_id: str, host_key: str | None) -> bool:
        return host_key == HOST_KEY


def meeting(name: str) -> Meeting:
    return Meeting(id=name * 22, title=name, created_at=datetime.now(timezone.utc), origin=Origin("web"))


@pytest.fixture
def sessions() -> Sessions:
    return Sessions(SessionContext(
        sfu=FakeSfu(), meetings=Hosts(), bus=Bus(), recordings=None, ice_servers=lambda: [], capacity=3,
        clock=lambda: datetime.now(timezone.utc), limits=ServerLimits(max_meetings=2, max_people=5),
        max_waiting=2))


class Person:
    """One connection to a meeting through Sessions."""

    count = 0

    def __init__(self, sessions: Sessions, m: Meeting, address: str = "192.0.2.1") -> None:
        Person.count += 1
        self.id = f"conn-{Person.count}"
        self.sessions, self.meeting, self.address = sessions, m, address
        self.channel = ListChannel()

    async def open(self) -> "Person":
        await self.sessions.connect(self.meeting, self.id, self.address, self.channel)
        return self

    async def send(self, message: dict[str, Any]) -> None:
        await self.sessions.receive(self.id, json.dumps(message))

    async def join(self, name: str, **extra: Any) -> "Person":
        await self.open()
        await self.send({"type": "join", "name": name, **extra})
        return self


async def test_a_resume_token_works_once_and_only_in_the_meeting_that_issued_it(sessions: Sessions) -> None:
    locked, other = meeting("a"), meeting("b")
    host = await Person(sessions, locked).join("Hana", host_key=HOST_KEY)
    await host.send({"type": "lock", "locked": True})
    stranger = await Person(sessions, other).join("Sam")
    token = stranger.channel.of("welcome")[0]["resume"]
    # Another meeting's token is no good here: the lobby, like anyone else.
    sneaky = await Person(sessions, locked).join("Sam", resume=token)
    assert sneaky.channel.of("waiting") and not sneaky.channel.of("welcome")
    guest = await Person(sessions, locked).join("Gus")
    await host.send({"type": "admit", "id": host.channel.of("lobby-added")[-1]["waiting"]["id"]})
    [welcome] = guest.channel.of("welcome")
    await sessions.disconnect(guest.id)  # a network blip
    back = await Person(sessions, locked).join("Gus", resume=welcome["resume"])
    assert back.channel.of("welcome")  # straight back in, past the lock
    again = await Person(sessions, locked).join("Gus", resume=welcome["resume"])
    assert again.channel.of("waiting")  # a token works once


async def test_someone_removed_cannot_resume(sessions: Sessions) -> None:
    m = meeting("c")
    host = await Person(sessions, m).join("Hana", host_key=HOST_KEY)
    guest = await Person(sessions, m).join("Gus")
    await host.send({"type": "lock", "locked": True})
    [welcome] = guest.channel.of("welcome")
    await host.send({"type": "remove", "id": welcome["you"]["id"]})
    assert guest.channel.closed == (CLOSE_FINAL, "removed")
    back = await Person(sessions, m).join("Gus", resume=welcome["resume"])
    assert back.channel.of("waiting") and not back.channel.of("welcome")


async def test_a_locked_meeting_stays_locked_when_everyone_drops_at_once(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = meeting("k")
    host = await Person(sessions, m).join("Hana", host_key=HOST_KEY)
    guest = await Person(sessions, m).join("Gus")
    await host.send({"type": "lock", "locked": True})
    tokens = {p.id: p.channel.of("welcome")[0]["resume"] for p in (host, guest)}
    # A blip drops every connection: the session ends, and a stranger arrives in between.
    await sessions.disconnect(host.id)
    await sessions.disconnect(guest.id)
    assert sessions.session(m.id) is None
    stranger = await Person(sessions, m).join("Sam")
    assert stranger.channel.of("waiting") and not stranger.channel.of("welcome")
    # The people who were in come back past the lock; the host's page is host again.
    back = await Person(sessions, m).join("Gus", resume=tokens[guest.id])
    assert back.channel.of("welcome")[0]["locked"] is True
    host_back = await Person(sessions, m).join("Hana", host_key=HOST_KEY, resume=tokens[host.id])
    assert host_back.channel.of("lobby")[0]["waiting"][0]["name"] == "Sam"


async def test_an_empty_meeting_unlocks_once_nobody_can_come_back(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resume_module, "GRACE", 0.2)
    m = meeting("u")
    host = await Person(sessions, m).join("Hana", host_key=HOST_KEY)
    watcher = await Person(sessions, m).open()
    await watcher.send({"type": "watch"})  # keeps the session alive on the pre-join screen
    await host.send({"type": "lock", "locked": True})
    await sessions.disconnect(host.id)
    assert watcher.channel.of("status")[-1]["locked"] is True  # Hana may still come back
    await wait_for(lambda: watcher.channel.of("status")[-1]["locked"] is False, timeout=5)
    # After the grace period a dropped session leaves nothing behind either.
    await sessions.disconnect(watcher.id)
    late = await Person(sessions, m).join("Sam")
    assert late.channel.of("welcome")[0]["locked"] is False


async def test_the_lobby_is_capped_knocks_are_limited_and_hosts_hear_one_change_at_a_time(sessions: Sessions) -> None:
    m = meeting("d")
    host = await Person(sessions, m).join("Hana", host_key=HOST_KEY)
    await host.send({"type": "lock", "locked": True})
    first = await Person(sessions, m, "192.0.2.10").join("One")
    second = await Person(sessions, m, "192.0.2.11").join("Two")
    third = await Person(sessions, m, "192.0.2.12").join("Three")  # the lobby holds two
    assert third.channel.of("error")[0]["code"] == "lobby-full" and third.channel.closed == (CLOSE_FINAL, "lobby-full")
    assert [m["waiting"]["name"] for m in host.channel.of("lobby-added")] == ["One", "Two"]
    assert not host.channel.of("lobby")  # never the whole list again
    await sessions.disconnect(first.id)
    assert host.channel.of("lobby-removed")[0]["id"] == host.channel.of("lobby-added")[0]["waiting"]["id"]
    # One address knocking over and over is stopped well before it fills anything.
    codes = []
    for _ in range(6):
        knocker = await Person(sessions, m, "198.51.100.9").join("Knock")
        if knocker.channel.of("error"):
            codes.append(knocker.channel.of("error")[0]["code"])
        await sessions.disconnect(knocker.id)
    assert codes.count("knock-rate-limited") >= 3  # told why: the lobby is not what is full
    assert "lobby-full" not in codes
    assert second.channel.of("waiting")[0]["hosts_present"] is True


async def test_the_lobby_is_told_when_no_host_can_let_it_in(sessions: Sessions) -> None:
    m = meeting("e")
    host = await Person(sessions, m).join("Hana", host_key=HOST_KEY)
    await Person(sessions, m).join("Gus")
    await host.send({"type": "lock", "locked": True})
    waiting = await Person(sessions, m).join("Nia")
    assert waiting.channel.of("waiting")[-1]["hosts_present"] is True
    await sessions.disconnect(host.id)
    latest = waiting.channel.of("waiting")[-1]
    assert latest["hosts_present"] is False and "no host" in latest["message"]


async def test_presence_goes_to_the_bus_once_per_change(sessions: Sessions) -> None:
    seen: list[PresenceChanged] = []

    async def record(event: PresenceChanged) -> None:
        seen.append(event)

    sessions.context.bus.subscribe(PresenceChanged, record)
    m = meeting("f")
    ann = await Person(sessions, m).join("Ann")
    ben = await Person(sessions, m).join("Ben")
    await ben.send({"type": "media", "audio_muted": True, "video_muted": False})  # not presence
    await sessions.disconnect(ben.id)
    await sessions.disconnect(ann.id)
    assert [e.present for e in seen] == [("Ann",), ("Ann", "Ben"), ("Ann",), ()]
    assert [e.ended_minutes for e in seen] == [None, None, None, 1]
    assert sessions.session(m.id) is None


async def test_server_wide_caps_on_meetings_and_people(sessions: Sessions) -> None:
    people = [await Person(sessions, meeting("g")).join(f"G{i}") for i in range(3)]
    people += [await Person(sessions, meeting("h")).join(f"H{i}") for i in range(2)]
    late = await Person(sessions, meeting("h")).join("H2")  # five people is the server's cap
    assert late.channel.of("error")[0]["code"] == "server-full"
    third = await Person(sessions, meeting("i")).open()  # two meetings is its other cap
    assert third.channel.of("error")[0]["code"] == "server-full" and third.channel.closed[0] == CLOSE_FINAL
    await sessions.disconnect(people[0].id)
    assert (await Person(sessions, meeting("h")).join("H3")).channel.of("welcome")


async def test_sockets_that_never_join_or_never_connect_media_are_closed(
        sessions: Sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions.context = dataclasses.replace(sessions.context, join_deadline=0.2, media_deadline=0.3)
    m = meeting("j")
    idle = await Person(sessions, m).open()
    await wait_for(lambda: idle.channel.closed is not None, 3, "the join deadline")
    assert idle.channel.closed[0] == CLOSE_RETRY and idle.channel.of("error")[0]["code"] == "join-timeout"

    sfu = sessions.context.sfu
    real_join = type(sfu.open("x")).join

    async def join_without_connecting(room: Any, participant_id: str, send_offer: Any, publish: Any = (),
                                      on_state: Any = None, on_paused: Any = None) -> Any:
        return await real_join(room, participant_id, send_offer, publish, on_state=None)

    # Media that never connects: a squatter's browser never answers its offer.
    monkeypatch.setattr(type(sfu.open("x")), "join", join_without_connecting)
    squatters = [await Person(sessions, m, f"203.0.113.{i}").join(f"S{i}") for i in range(3)]
    # Pending, they do not hold the meeting's three places: someone real still gets in.
    monkeypatch.undo()
    real = await Person(sessions, m).join("Real")
    assert real.channel.of("welcome")
    await wait_for(lambda: all(s.channel.closed for s in squatters), 3, "the media deadline")
    assert {s.channel.of("error")[0]["code"] for s in squatters} == {"media-timeout"}
    assert [p.name for p in sessions.session(m.id).room.participants.values()] == ["Real"]


async def test_squatters_at_the_bound_of_people_setting_up_make_way_for_a_newcomer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = Sessions(SessionContext(
        sfu=FakeSfu(), meetings=Hosts(), bus=Bus(), recordings=None, ice_servers=lambda: [], capacity=2,
        clock=lambda: datetime.now(timezone.utc), limits=ServerLimits(max_meetings=2, max_people=10)))
    sfu = sessions.context.sfu
    real_join = type(sfu.open("x")).join

    async def join_without_connecting(room: Any, participant_id: str, send_offer: Any, publish: Any = (),
                                      on_state: Any = None, **others: Any) -> Any:
        return await real_join(room, participant_id, send_offer, publish, on_state=None, **others)

    monkeypatch.setattr(type(sfu.open("x")), "join", join_without_connecting)
    m = meeting("k")
    # Twice the capacity may be setting up at once: four squatters fill that.
    squatters = [await Person(sessions, m, f"203.0.113.{i}").join(f"S{i}") for i in range(4)]
    assert all(s.channel.of("welcome") for s in squatters)
    late = await Person(sessions, m).join("Late")
    assert late.channel.of("welcome")  # the oldest squatter made way, not the newcomer
    assert squatters[0].channel.closed == (CLOSE_RETRY, "media timeout")
    assert squatters[0].channel.of("error")[0]["code"] == "media-timeout"
    assert not any(s.channel.closed for s in squatters[1:])
