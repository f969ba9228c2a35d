"""Host controls, lobby, chat and screen-share signaling over the real websocket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from meeting.models import Origin
from meeting.service import MeetingService, MintedMeeting
from tests.conftest import make_config, room_of, serving, wait_for
from bench.fake_sfu import FakeSfu
from tests.signaling_client import Socket, connect, join
from meeting.session.messages import MAX_CHAT_CHARS


@pytest.fixture
def sfu() -> FakeSfu:
    return FakeSfu()


@pytest.fixture
async def server(tmp_path: Path, meetings: MeetingService, sfu: FakeSfu) -> AsyncIterator[TestClient]:
    async with serving(make_config(tmp_path), meetings.store, sfu=sfu) as (client, _):  # type: ignore[arg-type]
        yield client


@pytest.fixture
async def minted(meetings: MeetingService) -> MintedMeeting:
    return await meetings.mint("Board", Origin("web"))


def host_key(minted: MintedMeeting) -> str:
    return minted.host_url.split("#host=")[1]


async def host_and_guest(server: TestClient, minted: MintedMeeting) -> tuple[Socket, dict, Socket, dict]:
    host, host_welcome = await join(server, minted.meeting.id, "Hana", host_key(minted))
    guest, guest_welcome = await join(server, minted.meeting.id, "Gus")
    await host.next("participant-joined")
    return host, host_welcome, guest, guest_welcome


async def test_host_key_makes_a_host_and_a_wrong_one_a_guest(server: TestClient, minted: MintedMeeting, caplog) -> None:
    host, welcome = await join(server, minted.meeting.id, "Hana", host_key(minted))
    assert welcome["you"]["host"] is True
    key = host_key(minted)
    wrong_key = ("y" if key[0] == "x" else "x") + key[1:]  # one character off, never the key
    guest = await connect(server, minted.meeting.id)
    await guest.send({"type": "join", "name": "Mallory", "host_key": wrong_key})
    assert "not valid" in (await guest.next("notice"))["text"]
    assert (await guest.next("welcome"))["you"]["host"] is False
    await guest.send({"type": "lock", "locked": True})
    assert await guest.error() == "not-host"
    assert not room_of(server, minted.meeting.id).locked
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "host action refused" in logged and wrong_key not in logged and host_key(minted) not in logged


async def test_lock_lobby_admit_and_deny(server: TestClient, minted: MintedMeeting, sfu: FakeSfu) -> None:
    host, _, guest, _ = await host_and_guest(server, minted)
    await host.send({"type": "lock", "locked": True})
    assert (await guest.next("locked"))["locked"] is True

    newcomer = await connect(server, minted.meeting.id)
    await newcomer.send({"type": "join", "name": "Nia"})
    await newcomer.next("waiting")
    nia = (await host.next("lobby-added"))["waiting"]
    assert nia["name"] == "Nia"
    await guest.send({"type": "ping"})
    await guest.next("pong")  # anything sent to the guest before now has arrived
    assert not any(m["type"].startswith("lobby") for m in guest.inbox)  # only hosts see the lobby
    # Waiting, the newcomer sees no names and gets no media.
    assert not any(m["type"] in ("welcome", "offer", "participant-joined") for m in newcomer.inbox)
    assert len(sfu.peers) == 2
    await newcomer.send({"type": "answer", "sdp": "v=0\r\n"})
    assert await newcomer.error() == "not-joined"

    await host.send({"type": "admit", "id": "nobody"})  # unknown ids are ignored
    await host.send({"type": "admit", "id": nia["id"]})
    welcome = await newcomer.next("welcome")
    assert sorted(p["name"] for p in welcome["participants"]) == ["Gus", "Hana"]
    assert (await host.next("lobby-removed"))["id"] == nia["id"]  # a change, not the whole list
    await wait_for(lambda: len(sfu.peers) == 3)  # media is set up after the admit, outside the lock

    denied = await connect(server, minted.meeting.id)
    await denied.send({"type": "join", "name": "Dee"})
    await denied.next("waiting")
    dee = (await host.next("lobby-added"))["waiting"]
    await host.send({"type": "deny", "id": dee["id"]})
    await denied.next("denied")
    await wait_for(lambda: denied.ws.closed)
    assert len(sfu.peers) == 3


async def test_unlocking_admits_whoever_waits(server: TestClient, minted: MintedMeeting) -> None:
    host, _, _, _ = await host_and_guest(server, minted)
    await host.send({"type": "lock", "locked": True})
    waiting = await connect(server, minted.meeting.id)
    await waiting.send({"type": "join", "name": "Wes"})
    await waiting.next("waiting")
    await host.send({"type": "lock", "locked": False})
    await waiting.next("welcome")


async def test_remove_and_no_rejoin_while_locked(server: TestClient, minted: MintedMeeting) -> None:
    host, _, guest, guest_welcome = await host_and_guest(server, minted)
    await host.send({"type": "lock", "locked": True})
    await host.send({"type": "remove", "id": guest_welcome["you"]["id"]})
    await guest.next("removed")
    await wait_for(lambda: guest.ws.closed)
    assert (await host.next("participant-left"))["id"] == guest_welcome["you"]["id"]
    again = await connect(server, minted.meeting.id)
    await again.send({"type": "join", "name": "Gus", "resume": guest_welcome["resume"]})
    await again.next("waiting")  # back in the lobby, not in the meeting


async def test_ask_to_mute_and_end_for_all(server: TestClient, minted: MintedMeeting, sfu: FakeSfu) -> None:
    host, _, guest, guest_welcome = await host_and_guest(server, minted)
    await host.send({"type": "ask-mute", "id": guest_welcome["you"]["id"]})
    assert (await guest.next("mute-request"))["by"] == "Hana"
    await host.send({"type": "end-meeting"})
    await guest.next("meeting-ended")
    await host.next("meeting-ended")
    await wait_for(lambda: guest.ws.closed and host.ws.closed)
    await wait_for(lambda: room_of(server, minted.meeting.id) is None)
    assert sfu.peers == {}


async def test_any_number_of_hosts(server: TestClient, meetings: MeetingService, minted: MintedMeeting) -> None:
    second = await meetings.channel_room(Origin("slack", "T", "C", "x"), "t")  # another meeting
    assert second.meeting.id != minted.meeting.id
    one, w1 = await join(server, minted.meeting.id, "One", host_key(minted))
    two, w2 = await join(server, minted.meeting.id, "Two", host_key(minted))
    assert w1["you"]["host"] and w2["you"]["host"]
    # A host key of another meeting grants nothing here.
    three = await connect(server, minted.meeting.id)
    await three.send({"type": "join", "name": "Three", "host_key": second.host_url.split("#host=")[1]})
    assert (await three.next("welcome"))["you"]["host"] is False


async def test_chat_is_relayed_with_name_and_time_and_limited(server: TestClient, minted: MintedMeeting) -> None:
    host, _, guest, _ = await host_and_guest(server, minted)
    await guest.send({"type": "chat", "text": "<img src=x onerror=alert(1)> hi"})
    message = await host.next("chat")
    assert message["name"] == "Gus" and message["text"] == "<img src=x onerror=alert(1)> hi"
    assert message["at"].endswith("+00:00")
    await guest.next("chat")  # the sender sees it too, in order
    await guest.send({"type": "chat", "text": "x" * (MAX_CHAT_CHARS + 1)})
    assert await guest.error() == "chat-too-long"
    await guest.send({"type": "chat", "ciphertext": "abc"})
    assert await guest.error() == "bad-message"  # not an encrypted meeting
    for i in range(10):
        await guest.send({"type": "chat", "text": f"spam {i}"})
    assert await guest.error() == "chat-rate-limited"
    await guest.send({"type": "ping"})
    await guest.next("pong")  # every chat before the ping has been handled
    await host.send({"type": "ping"})
    await host.next("pong")
    assert 4 <= sum(m["type"] == "chat" for m in host.inbox) < 10


async def test_e2ee_meeting_chat_carries_only_ciphertext(server: TestClient, meetings: MeetingService) -> None:
    minted = await meetings.mint("Secret", Origin("web"), e2ee=True)
    a, welcome = await join(server, minted.meeting.id, "A")
    assert welcome["e2ee"] is True
    b, _ = await join(server, minted.meeting.id, "B")
    await a.send({"type": "chat", "text": "plain"})
    assert await a.error() == "bad-message"
    await a.send({"type": "chat", "ciphertext": "q83v"})
    assert (await b.next("chat"))["ciphertext"] == "q83v"


async def test_screen_share_publication(server: TestClient, minted: MintedMeeting, sfu: FakeSfu) -> None:
    host, host_welcome, guest, _ = await host_and_guest(server, minted)
    await host.send({"type": "publish", "source": "screen"})
    updated = await guest.next("participant-updated")
    assert "screen" in updated["participant"]["publishes"]
    assert sfu.peers[minted.meeting.id, host_welcome["you"]["id"]].sources == {"screen"}
    await host.send({"type": "unpublish", "source": "screen"})
    updated = await guest.next("participant-updated")
    assert "screen" not in updated["participant"]["publishes"]
    await host.send({"type": "publish", "source": "camera"})
    assert await host.error() == "bad-message"


async def test_join_flood_from_one_address_is_refused_and_the_meeting_goes_on(
    server: TestClient, minted: MintedMeeting
) -> None:
    host, _, guest, _ = await host_and_guest(server, minted)
    refused = 0
    for _ in range(30):
        socket = await connect(server, minted.meeting.id)
        await socket.send({"type": "join", "name": "bot"})
        await wait_for(lambda s=socket: any(m["type"] in ("welcome", "error") for m in s.inbox))
        if any(m.get("code") == "rate-limited" for m in socket.inbox):
            refused += 1
        await socket.ws.close()
    assert refused >= 15
    await guest.send({"type": "chat", "text": "still here"})
    assert (await host.next("chat"))["text"] == "still here"
    await wait_for(lambda: len(room_of(server, minted.meeting.id).participants) == 2)


async def test_two_admits_at_once_let_one_person_in_once(server: TestClient, minted: MintedMeeting) -> None:
    host, _, _, _ = await host_and_guest(server, minted)
    await host.send({"type": "lock", "locked": True})
    newcomer = await connect(server, minted.meeting.id)
    await newcomer.send({"type": "join", "name": "Nia"})
    await newcomer.next("waiting")
    waiting = (await host.next("lobby-added"))["waiting"]
    admit = {"type": "admit", "id": waiting["id"]}
    await asyncio.gather(host.send(admit), host.send(admit))
    await newcomer.next("welcome")
    names = [p.name for p in room_of(server, minted.meeting.id).participants.values()]
    assert sorted(names) == ["Gus", "Hana", "Nia"]


async def test_admitted_then_gone_before_entering_leaves_no_ghost(
    server: TestClient, minted: MintedMeeting, sfu: FakeSfu
) -> None:
    host, _, _, _ = await host_and_guest(server, minted)
    await host.send({"type": "lock", "locked": True})
    newcomer = await connect(server, minted.meeting.id)
    await newcomer.send({"type": "join", "name": "Nia"})
    await newcomer.next("waiting")
    waiting = (await host.next("lobby-added"))["waiting"]
    # The page goes away while a host lets it in: whichever lands first, nobody stays a ghost.
    await asyncio.gather(host.send({"type": "admit", "id": waiting["id"]}), newcomer.ws.close())
    room = room_of(server, minted.meeting.id)
    await wait_for(lambda: sorted(p.name for p in room.participants.values()) == ["Gus", "Hana"])
    await wait_for(lambda: len(sfu.peers) == 2)
    assert room.lobby == {}


async def test_removed_while_media_is_set_up_leaves_no_orphan_peer(
    server: TestClient, minted: MintedMeeting, sfu: FakeSfu
) -> None:
    host, _, _, _ = await host_and_guest(server, minted)
    sfu.gate.clear()
    late = await connect(server, minted.meeting.id)
    await late.send({"type": "join", "name": "Lou"})
    joined = await host.next("participant-joined")
    await host.send({"type": "remove", "id": joined["participant"]["id"]})
    await late.next("removed")
    sfu.gate.set()
    await wait_for(lambda: late.ws.closed)
    await host.send({"type": "ping"})
    await host.next("pong")
    assert (minted.meeting.id, joined["participant"]["id"]) not in sfu.peers
    assert len(sfu.peers) == 2


async def test_a_guest_back_from_a_blip_skips_the_lobby_but_a_removed_one_does_not(
    server: TestClient, minted: MintedMeeting
) -> None:
    host, _, guest, guest_welcome = await host_and_guest(server, minted)
    await host.send({"type": "lock", "locked": True})
    await guest.next("locked")
    await guest.ws.close()  # a network blip
    await host.next("participant-left")
    back = await connect(server, minted.meeting.id)
    await back.send({"type": "join", "name": "Gus", "resume": guest_welcome["resume"]})
    welcome = await back.next("welcome")
    assert welcome["locked"] is True
    # The token worked once; a second use queues like anyone else.
    again = await connect(server, minted.meeting.id)
    await again.send({"type": "join", "name": "Gus", "resume": guest_welcome["resume"]})
    await again.next("waiting")
