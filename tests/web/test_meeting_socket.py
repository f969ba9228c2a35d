"""The signaling websocket over a real aiohttp server, with a recording stand-in for the SFU."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from meeting import ids
from meeting.models import Origin
from meeting.service import MeetingService
from tests.conftest import make_config, room_of, serving, wait_for
from bench.fake_sfu import FakeSfu
from tests.signaling_client import connect, join
from meeting.session.messages import MAX_MESSAGE_BYTES


@pytest.fixture
def sfu() -> FakeSfu:
    return FakeSfu()


@pytest.fixture
async def server(tmp_path: Path, meetings: MeetingService, sfu: FakeSfu) -> AsyncIterator[TestClient]:
    config = make_config(tmp_path)
    config = type(config)(**{**config.__dict__, "media": type(config.media)(max_participants=3)})
    async with serving(config, meetings.store, sfu=sfu) as (client, _):  # type: ignore[arg-type]
        yield client


@pytest.fixture
async def meeting_id(meetings: MeetingService) -> str:
    return (await meetings.mint("Sync", Origin("web"))).meeting.id


async def test_join_offer_answer_and_presence(server: TestClient, meeting_id: str, sfu: FakeSfu) -> None:
    alice, welcome = await join(server, meeting_id, "Alice")
    assert welcome["you"]["name"] == "Alice" and welcome["participants"] == []
    assert welcome["ice_servers"] == []
    offer = await alice.next("offer")
    assert offer["slots"] == [{"mid": "0", "kind": "audio", "source": "mic", "direction": "publish",
                               "participant": welcome["you"]["id"]}]
    await alice.send({"type": "answer", "sdp": "v=0\r\nanswer"})
    await alice.send({"type": "candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host",
                      "sdpMid": "0", "sdpMLineIndex": 0})
    peer = sfu.peers[meeting_id, welcome["you"]["id"]]
    await wait_for(lambda: peer.answers == ["v=0\r\nanswer"] and len(peer.candidates) == 1)

    bob, bob_welcome = await join(server, meeting_id, "<b>Bob</b>")
    assert [p["name"] for p in bob_welcome["participants"]] == ["Alice"]
    joined = await alice.next("participant-joined")
    assert joined["participant"]["name"] == "<b>Bob</b>"

    await bob.send({"type": "media", "audio_muted": True, "video_muted": False})
    updated = await alice.next("participant-updated")
    assert updated["participant"]["audio_muted"] is True

    await bob.send({"type": "leave"})
    left = await alice.next("participant-left")
    assert left["id"] == bob_welcome["you"]["id"]
    assert sfu.left == [bob_welcome["you"]["id"]]


async def test_bad_input_gets_errors_and_changes_nothing(server: TestClient, meeting_id: str, sfu: FakeSfu) -> None:
    alice, welcome = await join(server, meeting_id, "Alice")
    peer = sfu.peers[meeting_id, welcome["you"]["id"]]
    cases = [
        ("{oops", "bad-json"),
        (json.dumps({"type": "nope"}), "unknown-type"),
        (json.dumps({"type": "answer", "sdp": "v=0 bad"}), "bad-sdp"),
        (json.dumps({"type": "answer", "sdp": "garbage"}), "bad-sdp"),
        (json.dumps({"type": "candidate", "candidate": "bad"}), "bad-candidate"),
        (json.dumps({"type": "join", "name": "again"}), "already-joined"),
        (json.dumps({"type": "ping", "pad": "x" * (MAX_MESSAGE_BYTES + 1)}), "too-large"),
    ]
    for raw, code in cases:
        await alice.send(raw)
        assert await alice.error() == code
    await alice.ws.send_bytes(b"\x00\x01")
    assert await alice.error() == "bad-message"
    assert peer.answers == [] and peer.candidates == []
    await alice.send({"type": "ping"})
    await alice.next("pong")
    room = room_of(server, meeting_id)
    assert room is not None and len(room.participants) == 1


async def test_nothing_before_join(server: TestClient, meeting_id: str, sfu: FakeSfu) -> None:
    socket = await connect(server, meeting_id)
    await socket.send({"type": "answer", "sdp": "v=0\r\n"})
    assert await socket.error() == "not-joined"
    await socket.send({"type": "media", "audio_muted": True, "video_muted": True})
    assert await socket.error() == "not-joined"
    assert sfu.peers == {}


async def test_full_meeting_is_refused_with_a_clear_message(server: TestClient, meeting_id: str) -> None:
    for name in ("a", "b", "c"):
        await join(server, meeting_id, name)
    late = await connect(server, meeting_id)
    await late.send({"type": "join", "name": "d"})
    error = await late.next("error")
    assert error["code"] == "meeting-full" and "full" in error["message"]
    await wait_for(lambda: late.ws.closed)
    assert len(room_of(server, meeting_id).participants) == 3


async def test_dropped_socket_is_cleaned_up(server: TestClient, meeting_id: str, sfu: FakeSfu) -> None:
    alice, _ = await join(server, meeting_id, "Alice")
    bob, bob_welcome = await join(server, meeting_id, "Bob")
    await bob.ws.close()
    left = await alice.next("participant-left", timeout=3)
    assert left["id"] == bob_welcome["you"]["id"]
    await alice.ws.close()
    await wait_for(lambda: room_of(server, meeting_id) is None)
    assert sfu.peers == {}


async def test_resume_replaces_the_stale_participant(server: TestClient, meeting_id: str) -> None:
    alice, _ = await join(server, meeting_id, "Alice")
    bob, first = await join(server, meeting_id, "Bob")
    again = await connect(server, meeting_id)
    await again.send({"type": "join", "name": "Bob", "resume": first["resume"]})
    second = await again.next("welcome")
    assert (await alice.next("participant-left"))["id"] == first["you"]["id"]
    assert [p["name"] for p in second["participants"]] == ["Alice"]
    await wait_for(lambda: bob.ws.closed)  # the replaced page's old socket is closed
    assert len(room_of(server, meeting_id).participants) == 2


async def test_flood_is_rate_limited_without_disturbing_others(server: TestClient, meeting_id: str) -> None:
    alice, _ = await join(server, meeting_id, "Alice")
    flooder, _ = await join(server, meeting_id, "Flood")
    await alice.next("participant-joined")
    for _ in range(400):
        await flooder.send({"type": "ping"})
    assert await flooder.error() == "rate-limited"
    await alice.send({"type": "ping"})
    await alice.next("pong")
    assert not any(m["type"] == "error" for m in alice.inbox)


async def test_unknown_meeting_has_no_socket(server: TestClient) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as error:
        await server.ws_connect(f"/m/{ids.new_id()}/ws")
    assert error.value.status == 404
