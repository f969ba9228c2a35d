"""Starting and stopping recordings: the host-only API and socket actions, and who is told."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from meeting.models import Origin
from meeting.recording.model import COMPOSING, RECORDING
from meeting.service import MeetingService, MintedMeeting
from tests.conftest import make_config, serving, wait_for
from bench.fake_sfu import FakeSfu
from tests.signaling_client import join
from web.keys import RECORDINGS, SESSIONS


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


async def post(server: TestClient, meeting_id: str, body: Any, key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await server.post(f"/api/meetings/{meeting_id}/recording", json=body, headers=headers)
    return response.status, await response.json()


async def test_only_hosts_start_recording_everyone_sees_it_and_starting_twice_changes_nothing(
        server: TestClient, minted: MintedMeeting, sfu: FakeSfu, meetings: MeetingService,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    meeting_id = minted.meeting.id
    host, welcome = await join(server, meeting_id, "Hana", host_key(minted))
    guest, guest_welcome = await join(server, meeting_id, "Gus")
    assert welcome["recording"] == {"type": "recording", "active": False, "available": True}
    assert welcome["recordings"] == [] and "recordings" not in guest_welcome  # links: hosts only

    # Refused: no key, someone else's key, a guest over the socket. Nothing changes.
    other = await meetings.mint("Other", Origin("web"))
    assert (await post(server, meeting_id, {"action": "start"}))[0] == 403
    assert (await post(server, meeting_id, {"action": "start"}, host_key(other)))[0] == 403
    await guest.send({"type": "start-recording"})
    assert await guest.error() == "not-host"
    assert sfu.observed == {} and await meetings.store.all_recordings() == []
    assert not [m for m in host.inbox + guest.inbox if m["type"] == "recording"]

    status, body = await post(server, meeting_id, {"action": "start"}, host_key(minted))
    assert status == 200 and body["active"] is True and body["url"].startswith("http://127.0.0.1:8080/r/")
    for socket in (host, guest):
        message = await socket.next("recording")
        assert message["active"] is True and "url" not in message
    assert list(sfu.observed) == [meeting_id]

    again = await post(server, meeting_id, {"action": "start"}, host_key(minted))
    assert again == (200, body)
    await host.send({"type": "start-recording"})  # from the page too: still the same recording
    late, late_welcome = await join(server, meeting_id, "Lea")
    assert late_welcome["recording"]["active"] is True  # told on joining
    assert [r.state for r, _ in await meetings.store.all_recordings()] == [RECORDING]
    assert not [m for m in host.inbox + guest.inbox if m["type"] == "recording"]

    status, stopped = await post(server, meeting_id, {"action": "stop"}, host_key(minted))
    assert status == 200 and stopped == {"active": False, "url": body["url"]}
    for socket in (host, guest, late):
        message = await socket.next("recording")
        assert message["active"] is False and message["reason"] == "host"
    assert sfu.observed == {}
    [(recording, title)] = await meetings.store.all_recordings()
    assert recording.state == COMPOSING and title == "Board" and recording.duration is not None
    assert (await post(server, meeting_id, {"action": "stop"}, host_key(minted)))[1] == {"active": False}
    # (The test server's access log is aiohttp's own; `meetnow serve` uses the redacting one.)
    logged = " ".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert "recording started" in logged and "recording stopped" in logged
    assert meeting_id not in logged and recording.id not in logged and host_key(minted) not in logged


async def test_bad_requests_are_refused_and_change_nothing(
        server: TestClient, minted: MintedMeeting, meetings: MeetingService) -> None:
    key = host_key(minted)
    assert (await post(server, minted.meeting.id, {"action": "pause"}, key))[0] == 400
    assert (await post(server, minted.meeting.id, {"action": "start", "x": 1}, key))[0] == 400
    response = await server.post(f"/api/meetings/{minted.meeting.id}/recording", data="start",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"})
    assert response.status == 400
    assert (await post(server, "unknown-meeting", {"action": "start"}, key))[0] == 404
    # Nobody in the meeting: nothing to record yet.
    status, body = await post(server, minted.meeting.id, {"action": "start"}, key)
    assert status == 409 and body["code"] == "empty"
    assert await meetings.store.all_recordings() == []


async def test_the_recording_stops_by_itself_when_the_meeting_empties(
        server: TestClient, minted: MintedMeeting, sfu: FakeSfu, meetings: MeetingService) -> None:
    host, _ = await join(server, minted.meeting.id, "Hana", host_key(minted))
    guest, _ = await join(server, minted.meeting.id, "Gus")
    await host.send({"type": "start-recording"})
    assert (await guest.next("recording"))["active"] is True
    await host.send({"type": "leave"})
    await guest.send({"type": "leave"})
    await wait_for(lambda: not sfu.observed)

    async def composing() -> bool:
        rows = await meetings.store.all_recordings()
        return [r.state for r, _ in rows] == [COMPOSING]
    await wait_for(composing)


async def test_an_end_to_end_encrypted_meeting_cannot_be_recorded(
        server: TestClient, meetings: MeetingService, sfu: FakeSfu) -> None:
    minted = await meetings.mint("Secret", Origin("web"), e2ee=True)
    host, welcome = await join(server, minted.meeting.id, "Hana", host_key(minted))
    assert welcome["recording"]["available"] is False
    assert "end-to-end encrypted" in welcome["recording"]["message"]
    await host.send({"type": "start-recording"})
    error = await host.next("error")
    assert error["code"] == "recording-refused" and "cannot record" in error["message"]
    status, body = await post(server, minted.meeting.id, {"action": "start"}, host_key(minted))
    assert status == 409 and body["code"] == "e2ee" and "end-to-end encrypted" in body["error"]
    assert sfu.observed == {} and await meetings.store.all_recordings() == []


async def test_low_disk_refuses_to_start_and_stops_a_running_recording(
        server: TestClient, minted: MintedMeeting, sfu: FakeSfu, meetings: MeetingService) -> None:
    service = server.app[RECORDINGS]
    free = {"mb": 10.0}
    service.free_mb = lambda path: free["mb"]
    host, _ = await join(server, minted.meeting.id, "Hana", host_key(minted))
    status, body = await post(server, minted.meeting.id, {"action": "start"}, host_key(minted))
    assert status == 507 and body["code"] == "disk" and "disk space" in body["error"]
    await host.send({"type": "start-recording"})
    assert "disk space" in (await host.next("error"))["message"]
    assert await meetings.store.all_recordings() == []

    free["mb"] = 50_000.0
    assert (await post(server, minted.meeting.id, {"action": "start"}, host_key(minted)))[0] == 200
    assert (await host.next("recording"))["active"] is True
    sessions = server.app[SESSIONS]
    sessions.disk_check_interval = 0.05
    watcher = asyncio.create_task(sessions.watch_disk())
    try:
        free["mb"] = 100.0  # below the 1024 MB floor
        stopped = await host.next("recording")
        assert stopped["active"] is False and stopped["reason"] == "disk"
        assert "low on disk space" in (await host.next("notice"))["text"]
    finally:
        watcher.cancel()
    assert sfu.observed == {}
    [(recording, _)] = await meetings.store.all_recordings()
    assert recording.state == COMPOSING  # what was recorded is kept and composed
