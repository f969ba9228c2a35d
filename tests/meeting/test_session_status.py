"""What people are told before joining, a lobby nobody can open, and the end-to-end key check."""

from __future__ import annotations

import pytest

from meeting.session.messages import SignalingError, parse_message
from tests.meeting.session_kit import Kit


@pytest.fixture
async def kit() -> Kit:
    kit = Kit(recordings=True)
    yield kit
    await kit.close()


def status(person) -> dict:
    message = dict(person.last("status"))
    message.pop("type")
    return message


async def test_a_watcher_is_told_the_status_and_every_change(kit: Kit) -> None:
    watcher = await kit.connect()
    await watcher.send({"type": "watch"})
    assert status(watcher) == {"recording": False, "locked": False, "hosts_present": False}
    assert kit.session.conns[watcher.conn_id].timer is None  # no deadline while they read
    hana = await kit.joined("Hana", host=True)
    assert status(watcher) == {"recording": False, "locked": False, "hosts_present": True}
    await hana.send({"type": "start-recording"})
    assert status(watcher)["recording"] is True
    gus = await kit.joined("Gus")
    await hana.send({"type": "lock", "locked": True})
    assert status(watcher)["locked"] is True
    count = len(watcher.of("status"))
    await gus.send({"type": "hand", "raised": True})  # nothing a watcher is told about
    assert len(watcher.of("status")) == count
    # A watcher learns no names, no count and nothing said in the meeting.
    await gus.send({"type": "chat", "text": "hello"})
    assert {m["type"] for m in watcher.channel.messages} == {"status"}
    await hana.leave()
    assert status(watcher) == {"recording": True, "locked": True, "hosts_present": False}
    # Joining from the same connection: the locked meeting's lobby, told the status there too.
    await watcher.join("Nia")
    assert watcher.last("waiting")["hosts_present"] is False
    assert status(watcher)["hosts_present"] is False


async def test_watching_is_once_and_before_joining(kit: Kit) -> None:
    ann = await kit.joined("Ann")
    await ann.send({"type": "watch"})
    assert ann.error() == "already-joined"
    watcher = await kit.connect()
    await watcher.send({"type": "watch"})
    await watcher.send({"type": "watch"})
    assert watcher.error() == "already-joined"
    with pytest.raises(SignalingError):
        parse_message('{"type": "watch", "x": 1}')


async def test_watchers_are_capped(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    from meeting.session import session as session_module

    monkeypatch.setattr(session_module, "MAX_WATCHERS", 3)
    watchers = [await kit.connect() for _ in range(4)]
    for watcher in watchers:
        await watcher.send({"type": "watch"})
    assert all(w.of("status") for w in watchers[:3])
    assert watchers[3].error() == "watchers-full" and not watchers[3].of("status")
    await watchers[0].leave()
    await watchers[3].send({"type": "watch"})
    assert watchers[3].of("status")


async def test_the_last_one_out_unlocks_for_whoever_comes_next(kit: Kit) -> None:
    watcher = await kit.connect()
    await watcher.send({"type": "watch"})
    hana = await kit.joined("Hana", host=True)
    await hana.send({"type": "lock", "locked": True})
    await hana.send({"type": "leave"})  # on purpose: a page that drops may come back (test_session.py)
    # The session lives on for the watcher, but the meeting starts over as a new one would.
    assert not kit.session.room.locked and status(watcher)["locked"] is False
    await watcher.join("Nia")
    assert watcher.of("welcome")


async def test_a_lobby_without_a_host_is_told_plainly_and_so_is_the_meeting(kit: Kit) -> None:
    hana = await kit.joined("Hana", host=True)
    gus = await kit.joined("Gus")
    await hana.send({"type": "lock", "locked": True})
    nia = await kit.connect()
    await nia.join("Nia")
    assert nia.last("waiting")["hosts_present"] is True
    assert not gus.of("knocking")  # a host is here to let her in
    await hana.leave()
    # Nia learns nobody can let her in; the people inside learn someone knocks in vain.
    assert nia.last("waiting")["hosts_present"] is False
    assert "no host" in nia.last("waiting")["message"]
    assert gus.last("knocking")["count"] == 1
    assert not gus.of("lobby-added")  # still no names for guests
    oli = await kit.connect()
    await oli.join("Oli")
    assert gus.last("knocking")["count"] == 2
    await oli.leave()
    assert gus.last("knocking")["count"] == 1
    # Someone who joins now (back from a blip: locked meetings let them in) is told at once.
    resume = gus.last("welcome")["resume"]
    await gus.leave()
    back = await kit.connect()
    await back.join("Gus", resume=resume)
    assert back.last("knocking")["count"] == 1
    # A host arrives: the lobby is attended again, and the room is told it is.
    hana = await kit.joined("Hana", host=True)
    assert back.last("knocking")["count"] == 0
    assert nia.last("waiting")["hosts_present"] is True
    assert [w["name"] for w in hana.last("lobby")["waiting"]] == ["Nia"]


async def test_the_key_check_is_shown_to_everyone_and_checked() -> None:
    kit = Kit(e2ee=True)
    ann = await kit.joined("Ann", key_check="0123456789abcdef")
    ben = await kit.joined("Ben", key_check="fedcba9876543210")
    cat = await kit.joined("Cat")  # no key in the link
    checks = {p["name"]: p["key_check"] for p in cat.last("welcome")["participants"]}
    assert checks == {"Ann": "0123456789abcdef", "Ben": "fedcba9876543210"}
    assert ann.of("participant-joined")[-1]["participant"]["key_check"] is None
    assert ann.of("participant-joined")[0]["participant"]["key_check"] == "fedcba9876543210"
    # Anything but 16 hex digits is refused before it reaches the meeting.
    for bad in ("0123456789ABCDEF", "short", "0123456789abcdef0", "the actual key, by mistake!"):
        with pytest.raises(SignalingError):
            parse_message(f'{{"type": "join", "name": "X", "key_check": "{bad}"}}')
    await kit.close()


async def test_a_key_check_in_a_plain_meeting_is_refused_and_changes_nothing(kit: Kit) -> None:
    person = await kit.connect()
    await person.send({"type": "join", "name": "Dee", "key_check": "0123456789abcdef"})
    assert person.error() == "bad-message"
    assert not kit.session.room.participants
    await person.join("Dee")  # the same connection can still join properly
    assert person.of("welcome")
