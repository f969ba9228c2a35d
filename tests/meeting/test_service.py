import asyncio

import pytest

from meeting import ids
from meeting.config import Config
from meeting.models import Origin
from meeting.service import DEFAULT_TITLE, MeetingService, TitleError, clean_title, cut_title
from meeting.store.base import Store
from tests.stores import query, same_database


@pytest.fixture
def store(each_store: Store) -> Store:
    """Every test here runs on both stores."""
    return each_store


async def test_mint_gives_links_and_keeps_only_the_key_hash(meetings: MeetingService, store: Store) -> None:
    minted = await meetings.mint("  Weekly   sync ", Origin("discord", "G1", "C9", "Bob"))
    meeting = minted.meeting
    assert meeting.title == "Weekly sync"
    assert minted.url == f"http://127.0.0.1:8080/m/{meeting.id}"
    assert minted.host_url.startswith(minted.url + "#host=")
    host_key = minted.host_url.split("#host=", 1)[1]
    assert ids.is_valid_id(meeting.id)
    assert await store.get_meeting(meeting.id) == meeting
    assert await query(store, "SELECT key_hash FROM host_keys") == [(ids.hash_key(host_key),)]
    assert await meetings.is_host(meeting.id, host_key)
    assert not await meetings.is_host(meeting.id, ids.new_host_key())
    assert not await meetings.is_host(meeting.id, None)


async def test_channel_room_is_the_same_meeting_with_a_host_key_per_asker(meetings: MeetingService) -> None:
    origin = Origin("slack", "T1", "C1", "Alice")
    first = await meetings.channel_room(origin, "#general")
    second = await meetings.channel_room(Origin("slack", "T1", "C1", "Bob"), "#general")
    other = await meetings.channel_room(Origin("slack", "T1", "C2", "Bob"), "#random")
    assert first.url == second.url != other.url
    assert first.host_url != second.host_url
    for minted in (first, second):
        assert await meetings.is_host(first.meeting.id, minted.host_url.split("#host=")[1])


async def test_get_skips_malformed_ids(meetings: MeetingService) -> None:
    assert await meetings.get("../etc") is None
    assert await meetings.get(ids.new_id()) is None


def test_titles() -> None:
    assert clean_title(None) == DEFAULT_TITLE
    assert clean_title("   ") == DEFAULT_TITLE
    assert clean_title("a" * 200) == "a" * 200
    with pytest.raises(TitleError):
        clean_title("a" * 201)
    with pytest.raises(TitleError):
        clean_title(5)  # type: ignore[arg-type]
    assert len(cut_title("b" * 500)) == 200


def test_public_url_trailing_slash_is_ignored(store: Store) -> None:
    service = MeetingService(store, "https://meet.example.org/")
    assert service.join_url("x") == "https://meet.example.org/m/x"


async def test_a_channel_room_stays_one_meeting_when_two_servers_race(store: Store, config: Config) -> None:
    """Two servers on one database (on SQLite: two connections to one file) answer the same
    channel's first /meetnow at the same moment: everyone gets the same room."""
    other = same_database(store)
    await other.open()
    try:
        services = [MeetingService(s, config.server.public_url) for s in (store, other)]
        asked = [services[i % 2].channel_room(Origin("slack", "T1", "C7", f"P{i}"), "#race") for i in range(16)]
        rooms = await asyncio.gather(*asked)
    finally:
        await other.close()
    assert len({r.meeting.id for r in rooms}) == 1
    assert len({r.host_url for r in rooms}) == 16  # each asker still has a host link of their own
    assert await store.channel_meeting("slack", "T1", "C7") == rooms[0].meeting.id
