from datetime import datetime, timedelta, timezone

import pytest

from meeting.session.room import (
    NAME_MAX, Ended, Joined, Left, NotInRoom, Room, RoomFull, Started, Updated, clean_name,
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_first_join_starts_and_last_leave_ends_with_duration() -> None:
    clock = Clock()
    room = Room("m", capacity=5, clock=clock)
    alice, events = room.join("Alice", frozenset({"mic", "camera"}))
    assert events == [Started(clock.now), Joined(alice)]
    bob, events = room.join("Bob")
    assert events == [Joined(bob)]
    clock.now += timedelta(minutes=23)
    assert room.leave(alice.id) == [Left(alice)]
    events = room.leave(bob.id)
    assert events[0] == Left(bob)
    assert isinstance(events[1], Ended) and events[1].duration == timedelta(minutes=23)
    assert room.empty and room.started_at is None


def test_capacity_counts_connected_people_and_bounds_pending_ones() -> None:
    room = Room("m", capacity=2, clock=Clock())
    for name in ("a", "b"):
        p, _ = room.join(name)
        room.media_connected(p.id)
    with pytest.raises(RoomFull):
        room.join("c")
    assert len(room.participants) == 2


def test_people_whose_media_never_connects_do_not_take_places() -> None:
    room = Room("m", capacity=2, clock=Clock())
    squatters = [room.join(f"s{i}")[0] for i in range(4)]  # pending: at most twice the capacity
    with pytest.raises(RoomFull):
        room.join("s4")
    for squatter in squatters:
        room.leave(squatter.id)  # their deadline passed
    real, _ = room.join("real")
    room.media_connected(real.id)
    assert room.pending == set() and list(room.participants) == [real.id]


def test_a_newcomer_displaces_the_longest_pending_when_all_pending_places_are_taken() -> None:
    room = Room("m", capacity=2, clock=Clock())
    assert room.displaced() is None
    squatters = [room.join(f"s{i}")[0] for i in range(4)]
    assert room.displaced() == squatters[0].id  # the oldest makes way
    room.leave(squatters[0].id)
    assert room.displaced() is None
    real, _ = room.join("real")
    assert room.displaced() == squatters[1].id
    for squatter in squatters[1:]:
        room.leave(squatter.id)
    room.media_connected(real.id)
    other, _ = room.join("other")
    room.media_connected(other.id)
    assert room.displaced() is None  # full of connected people: nobody is displaced, the next is refused


def test_everyone_receives_everyone_elses_publications() -> None:
    room = Room("m", capacity=5, clock=Clock())
    a, _ = room.join("a", frozenset({"mic", "camera"}))
    b, _ = room.join("b", frozenset({"mic"}))
    c, _ = room.join("c", frozenset({"mic", "camera", "bogus"}))
    assert c.publishes == frozenset({"mic", "camera"})
    assert room.receives(a.id) == [(b.id, "mic"), (c.id, "camera"), (c.id, "mic")]
    assert room.receives(b.id) == [(a.id, "camera"), (a.id, "mic"), (c.id, "camera"), (c.id, "mic")]


def test_update_reports_only_real_changes_and_unknown_ids() -> None:
    room = Room("m", capacity=5, clock=Clock())
    a, _ = room.join("a")
    [event] = room.update(a.id, audio_muted=True)
    assert isinstance(event, Updated) and event.participant.audio_muted
    assert room.update(a.id, audio_muted=True) == []
    with pytest.raises(NotInRoom):
        room.update("nobody", audio_muted=True)
    assert room.leave("nobody") == []


def test_names_are_cleaned() -> None:
    assert clean_name("  Ada\n  Lovelace ") == "Ada Lovelace"
    assert clean_name("") == "Guest"
    assert len(clean_name("x" * 500)) == NAME_MAX
    assert clean_name("Ada \u202eecalovoL") == "Ada ecalovoL"  # no reversed text posing as another
    assert clean_name("\x1b[31mAda\x00") == "[31mAda"
    assert clean_name("\u2066\u202e") == "Guest"
    assert clean_name("\U0001F469\u200d\U0001F4BB Ada") == "\U0001F469\u200d\U0001F4BB Ada"  # joiners stay


def test_hands_are_ordered_by_raising_and_a_handover_keeps_a_host_throughout() -> None:
    room = Room("m", capacity=5, clock=Clock())
    a, _ = room.join("a", is_host=True)
    b, _ = room.join("b", audio_muted=True)
    c, _ = room.join("c")
    assert room.participants[b.id].audio_muted
    room.raise_hand(c.id, True)
    room.raise_hand(a.id, True)
    assert [p.name for p in room.hands()] == ["c", "a"]
    assert room.raise_hand(a.id, True) == []
    room.raise_hand(c.id, False)
    room.raise_hand(c.id, True)
    assert [p.name for p in room.hands()] == ["a", "c"]
    with pytest.raises(NotInRoom):
        room.raise_hand("nobody", True)
    first, second = room.hand_over(a.id, b.id)
    assert first.participant.id == b.id and first.participant.is_host  # the new host first
    assert second.participant.id == a.id and not second.participant.is_host
    assert room.hosts_present()


def test_unattended_counts_the_lobby_only_without_a_host() -> None:
    room = Room("m", capacity=5, clock=Clock())
    host, _ = room.join("h", is_host=True)
    room.lock(True)
    room.knock("n")
    assert room.unattended() == 0
    room.leave(host.id)
    assert room.unattended() == 1
