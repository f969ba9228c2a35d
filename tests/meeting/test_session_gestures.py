"""Joining muted, raised hands and reactions, through a meeting session with no sockets."""

from __future__ import annotations

import pytest

from meeting.session.messages import REACTIONS, SignalingError, parse_message
from tests.meeting.session_kit import Kit


@pytest.fixture
async def kit() -> Kit:
    kit = Kit()
    yield kit
    await kit.close()


async def test_joining_muted_shows_the_others_muted_from_the_first_message(kit: Kit) -> None:
    ann = await kit.joined("Ann")
    ben = await kit.joined("Ben", audio_muted=True, video_muted=True)
    [joined] = ann.of("participant-joined")
    assert joined["participant"]["audio_muted"] is True and joined["participant"]["video_muted"] is True
    assert ben.last("welcome")["you"]["video_muted"] is True
    late = await kit.joined("Cat")
    [ben_seen] = [p for p in late.last("welcome")["participants"] if p["name"] == "Ben"]
    assert ben_seen["video_muted"] is True and ben_seen["audio_muted"] is True
    # Nobody was told about Ben with his camera on, not even for a moment.
    assert not any(m["participant"]["name"] == "Ben" and not m["participant"]["video_muted"]
                   for m in ann.of("participant-updated"))


async def test_hands_keep_the_order_they_were_raised_in(kit: Kit) -> None:
    ann, ben, cat = await kit.joined("Ann"), await kit.joined("Ben"), await kit.joined("Cat")
    for person in (cat, ann, ben):
        await person.send({"type": "hand", "raised": True})
    assert [p.name for p in kit.session.room.hands()] == ["Cat", "Ann", "Ben"]
    # Everyone is told, with the number that orders the hands.
    updates = [m["participant"] for m in ann.of("participant-updated")]
    assert [(u["name"], u["hand"]) for u in updates] == [("Cat", 1), ("Ann", 2), ("Ben", 3)]
    # Lowered and raised again: to the back of the queue.
    await cat.send({"type": "hand", "raised": False})
    await cat.send({"type": "hand", "raised": True})
    assert [p.name for p in kit.session.room.hands()] == ["Ann", "Ben", "Cat"]
    # Raising a raised hand changes nothing and tells nobody.
    before = len(ben.of("participant-updated"))
    await ann.send({"type": "hand", "raised": True})
    assert len(ben.of("participant-updated")) == before


async def test_a_page_back_from_a_blip_keeps_its_place_among_raised_hands(kit: Kit) -> None:
    ann, ben, cat = await kit.joined("Ann"), await kit.joined("Ben"), await kit.joined("Cat")
    for person in (ann, ben, cat):
        await person.send({"type": "hand", "raised": True})
    token = ann.last("welcome")["resume"]
    await ann.leave()  # the connection drops
    back = await kit.joined("Ann", resume=token)
    assert back.last("welcome")["you"]["hand"] == 1
    await back.send({"type": "hand", "raised": True})  # what the page says again: no change
    assert [p.name for p in kit.session.room.hands()] == ["Ann", "Ben", "Cat"]
    # Leaving on purpose keeps nothing: coming back is raising anew.
    token = ben.last("welcome")["resume"]
    await ben.send({"type": "leave"})
    again = await kit.joined("Ben", resume=token)
    assert again.last("welcome")["you"]["hand"] is None


async def test_raising_a_hand_is_rate_limited(kit: Kit) -> None:
    ann, ben = await kit.joined("Ann"), await kit.joined("Ben")
    for i in range(30):  # bounded: a page stuck toggling
        await ann.send({"type": "hand", "raised": i % 2 == 0})
    assert ann.error() == "rate-limited"
    assert 4 <= len([m for m in ben.of("participant-updated") if m["participant"]["name"] == "Ann"]) <= 8


async def test_a_host_lowers_a_hand_and_its_owner_is_told(kit: Kit) -> None:
    hana = await kit.joined("Hana", host=True)
    gus = await kit.joined("Gus")
    await gus.send({"type": "hand", "raised": True})
    await hana.send({"type": "lower-hand", "id": gus.id})
    assert kit.participant(gus).hand is None
    assert gus.last("hand-lowered")["by"] == "Hana"
    assert hana.last("participant-updated")["participant"]["hand"] is None
    # A guest cannot lower anyone's hand; a hand that is down is left alone.
    await hana.send({"type": "hand", "raised": True})
    await gus.send({"type": "lower-hand", "id": hana.id})
    assert gus.error() == "not-host"
    assert kit.participant(hana).hand is not None
    told = len(gus.of("hand-lowered"))
    await hana.send({"type": "lower-hand", "id": gus.id})
    assert len(gus.of("hand-lowered")) == told


async def test_reactions_reach_everyone_from_the_allowlist_only(kit: Kit) -> None:
    ann, ben = await kit.joined("Ann"), await kit.joined("Ben")
    await ann.send({"type": "react", "emoji": REACTIONS[0]})
    assert ben.last("reaction") == {"type": "reaction", "from": ann.id, "emoji": REACTIONS[0]}
    assert ann.last("reaction")["from"] == ann.id  # the sender sees it as the others do
    for bad in ({"emoji": "<b>"}, {"emoji": "x" * 5000}, {"emoji": 1}, {"ciphertext": "AAAA"}, {},
                {"emoji": REACTIONS[0], "ciphertext": "AAAA"}):
        errors, sent = len(ann.of("error")), len(ben.of("reaction"))
        await ann.send({"type": "react", **bad})
        assert len(ann.of("error")) == errors + 1 and ann.error() == "bad-message", bad
        assert len(ben.of("reaction")) == sent
    for _ in range(20):  # bounded
        await ann.send({"type": "react", "emoji": REACTIONS[1]})
    assert ann.error() == "rate-limited"
    assert len(ben.of("reaction")) < 10


async def test_encrypted_meetings_carry_sealed_reactions_only() -> None:
    kit = Kit(e2ee=True)
    ann, ben = await kit.joined("Ann"), await kit.joined("Ben")
    await ann.send({"type": "react", "emoji": REACTIONS[0]})
    assert ann.error() == "bad-message"
    assert not ben.of("reaction")
    await ann.send({"type": "react", "ciphertext": "q83vEjRWeJA="})
    assert ben.last("reaction") == {"type": "reaction", "from": ann.id, "ciphertext": "q83vEjRWeJA="}
    with pytest.raises(SignalingError):
        parse_message('{"type": "react", "ciphertext": "' + "A" * 200 + '"}')
    await kit.close()


async def test_gestures_before_joining_are_refused(kit: Kit) -> None:
    person = await kit.connect()
    for message in ({"type": "hand", "raised": True}, {"type": "react", "emoji": REACTIONS[0]},
                    {"type": "mute-answer", "request": "x", "answer": "accepted"}):
        await person.send(message)
        assert person.error() == "not-joined"
