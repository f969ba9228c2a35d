"""Mute all, asking to mute with an answer, and handing the host role over, without sockets."""

from __future__ import annotations

import asyncio

import pytest

from meeting.session import actions as actions_module
from tests.conftest import wait_for
from tests.meeting.session_kit import FakeRecordings, Kit


@pytest.fixture
async def kit() -> Kit:
    kit = Kit(recordings=True)
    yield kit
    await kit.close()


async def test_mute_all_asks_every_other_page_to_mute_itself(kit: Kit) -> None:
    hana = await kit.joined("Hana", host=True)
    gus, ida = await kit.joined("Gus"), await kit.joined("Ida")
    await hana.send({"type": "mute-all"})
    assert gus.last("muted") == {"type": "muted", "by": "Hana"}
    assert ida.last("muted")["by"] == "Hana"
    assert not hana.of("muted")
    # The server does not mute anyone behind their back: each page says so itself, and may unmute.
    assert not kit.participant(gus).audio_muted
    await gus.send({"type": "media", "audio_muted": True, "video_muted": False})
    await gus.send({"type": "media", "audio_muted": False, "video_muted": False})
    assert not kit.participant(gus).audio_muted
    # Guests cannot; a host repeating it is held back.
    await gus.send({"type": "mute-all"})
    assert gus.error() == "not-host"
    for _ in range(10):  # bounded
        await hana.send({"type": "mute-all"})
    assert hana.error() == "rate-limited"
    assert len(ida.of("muted")) <= 3


async def test_ask_to_mute_is_answered_to_the_host_who_asked(kit: Kit) -> None:
    hana = await kit.joined("Hana", host=True)
    other_host = await kit.joined("Olga", host=True)
    gus = await kit.joined("Gus")
    await hana.send({"type": "ask-mute", "id": gus.id})
    request = gus.last("mute-request")
    assert request["by"] == "Hana" and request["request"]
    # Asking again before an answer is refused: prompts do not pile up on anyone's screen.
    await hana.send({"type": "ask-mute", "id": gus.id})
    assert hana.error() == "mute-pending"
    assert len(gus.of("mute-request")) == 1
    # Only the person asked can answer, and only once.
    await other_host.send({"type": "mute-answer", "request": request["request"], "answer": "accepted"})
    assert other_host.error() == "unknown-request"
    await gus.send({"type": "mute-answer", "request": request["request"], "answer": "declined"})
    assert hana.last("mute-answer") == {"type": "mute-answer", "request": request["request"], "id": gus.id,
                                        "name": "Gus", "answer": "declined"}
    assert not other_host.of("mute-answer")
    await gus.send({"type": "mute-answer", "request": request["request"], "answer": "accepted"})
    assert gus.error() == "unknown-request"
    assert len(hana.of("mute-answer")) == 1
    # Asked again, accepted.
    await hana.send({"type": "ask-mute", "id": gus.id})
    await gus.send({"type": "mute-answer", "request": gus.last("mute-request")["request"], "answer": "accepted"})
    assert hana.last("mute-answer")["answer"] == "accepted"
    # Nobody asks themselves; guests ask nobody.
    await hana.send({"type": "ask-mute", "id": hana.id})
    assert not hana.of("mute-request")
    await gus.send({"type": "ask-mute", "id": hana.id})
    assert gus.error() == "not-host"


async def test_an_unanswered_request_is_answered_no_answer(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actions_module, "MUTE_ASK_SECONDS", 0.05)
    hana = await kit.joined("Hana", host=True)
    gus = await kit.joined("Gus")
    await hana.send({"type": "ask-mute", "id": gus.id})
    await wait_for(lambda: bool(hana.of("mute-answer")), timeout=5)
    assert hana.last("mute-answer")["answer"] == "no-answer"
    await gus.send({"type": "mute-answer", "request": gus.last("mute-request")["request"], "answer": "accepted"})
    assert gus.error() == "unknown-request"  # too late: nothing more reaches the host
    assert len(hana.of("mute-answer")) == 1


async def test_a_request_to_someone_who_leaves_ends_with_no_answer(kit: Kit) -> None:
    hana = await kit.joined("Hana", host=True)
    gus = await kit.joined("Gus")
    await hana.send({"type": "ask-mute", "id": gus.id})
    await gus.leave()
    assert hana.last("mute-answer")["answer"] == "no-answer"
    assert len(kit.session._asks) == 0  # nothing kept for people who are gone


async def test_handing_the_host_role_over(kit: Kit) -> None:
    hana = await kit.joined("Hana", host=True)
    gus = await kit.joined("Gus")
    await hana.send({"type": "lock", "locked": True})
    waiting = await kit.connect()
    await waiting.join("Nia")
    assert waiting.of("waiting")

    await hana.send({"type": "make-host", "id": gus.id})
    assert kit.participant(gus).is_host and not kit.participant(hana).is_host
    made = gus.last("made-host")
    assert made["by"] == "Hana" and made["recordings"] == [FakeRecordings.LINK]
    assert [w["name"] for w in gus.last("lobby")["waiting"]] == ["Nia"]
    hosts = {m["participant"]["name"]: m["participant"]["host"] for m in hana.of("participant-updated")}
    assert hosts == {"Gus": True, "Hana": False}
    # The lobby stayed attended throughout: nobody was told it had no host.
    assert not hana.of("knocking") and not gus.of("knocking")
    # Hana is a guest now; Gus does what hosts do.
    await hana.send({"type": "admit", "id": gus.last("lobby")["waiting"][0]["id"]})
    assert hana.error() == "not-host"
    await gus.send({"type": "admit", "id": gus.last("lobby")["waiting"][0]["id"]})
    assert waiting.of("welcome")
    # Only to someone present who is not a host already.
    await gus.send({"type": "make-host", "id": "nobody"})
    await gus.send({"type": "make-host", "id": gus.id})
    assert kit.participant(gus).is_host and not kit.participant(hana).is_host


async def test_the_handed_role_survives_a_resume_but_not_a_removal(kit: Kit) -> None:
    hana = await kit.joined("Hana", host=True)
    gus = await kit.joined("Gus")
    await hana.send({"type": "make-host", "id": gus.id})
    await hana.send({"type": "lock", "locked": True})
    assert hana.error() == "not-host"
    await gus.send({"type": "lock", "locked": True})
    resume = gus.last("welcome")["resume"]
    await gus.leave()  # a network blip
    back = await kit.connect()
    welcome = await back.join("Gus", resume=resume)
    assert welcome["you"]["host"] is True  # not sent to the lobby of the locked meeting either
    assert welcome["recordings"] == [FakeRecordings.LINK]
    # Handed back to Hana (her page had the host key), then Hana removes Gus: his resume is void.
    await back.send({"type": "make-host", "id": hana.id})
    await hana.send({"type": "make-host", "id": back.id})
    resume = back.last("welcome")["resume"]
    await back.send({"type": "make-host", "id": hana.id})
    await hana.send({"type": "remove", "id": back.id})
    again = await kit.connect()
    await again.join("Gus", resume=resume)
    assert again.of("waiting") and not again.of("welcome")


async def test_handing_over_to_a_host_is_refused(kit: Kit) -> None:
    hana = await kit.joined("Hana", host=True)
    olga = await kit.joined("Olga", host=True)
    await hana.send({"type": "make-host", "id": olga.id})
    assert hana.error() == "already-host"
    assert kit.participant(hana).is_host and kit.participant(olga).is_host


async def test_media_set_up_survives_changes_to_the_participant_meanwhile(kit: Kit) -> None:
    """A record replaced while the media is being set up (made host here) is the same person."""
    hana = await kit.joined("Hana", host=True)
    kit.sfu.gate.clear()
    gus = await kit.connect()
    joining = asyncio.ensure_future(gus.join("Gus"))
    await wait_for(lambda: bool(gus.of("welcome")))
    gus.id = gus.last("welcome")["you"]["id"]
    await hana.send({"type": "make-host", "id": gus.id})
    kit.sfu.gate.set()
    await joining
    assert (kit.meeting.id, gus.id) in kit.sfu.peers
    assert kit.session.conns[gus.conn_id].peer is not None
