"""What a page shows after a new connection (a network blip, or Leave then Rejoin): what the
person meant stays (a raised hand), and everything else comes from the server again."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser

from meeting.models import Origin
from meeting.service import MeetingService, MintedMeeting
from tests.conftest import room_of, wait_for
from tests.signaling_client import connect
from tests.web.meeting_page import more
from tests.web.test_browser_in_meeting import local
from tests.web.test_browser_meeting import join_meeting, new_page

pytestmark = pytest.mark.browser

# Keeps the page's sockets at hand, so a test can drop the live one as a network blip would.
KEEP_SOCKETS = """
(() => {
  window.__sockets = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
    }
  };
})();
"""


@pytest.fixture
async def minted(meetings: MeetingService) -> MintedMeeting:
    return await meetings.mint("Team", Origin("web"))


async def test_a_raised_hand_stays_up_when_the_page_reconnects(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    ann = await new_page(browser, KEEP_SOCKETS)
    await join_meeting(ann, local(client, minted.url), "Ann")
    ben = await new_page(browser)
    await join_meeting(ben, local(client, minted.url), "Ben")
    await ann.click("#hand")
    await ben.wait_for_selector("#people li:has-text('Ann') .hand-flag")
    room = room_of(client, minted.meeting.id)
    assert room is not None
    [before] = [p.id for p in room.participants.values() if p.name == "Ann"]

    await ann.evaluate("() => window.__sockets[window.__sockets.length - 1].close()")
    # Back as a new participant record (the server's), with the hand up again.
    await wait_for(lambda: any(p.name == "Ann" and p.id != before and p.hand is not None
                               for p in room.participants.values()), timeout=15)
    await ann.wait_for_function("() => window.__sockets.length >= 2")
    await ann.wait_for_selector("#hand[aria-pressed='true']")
    await ann.wait_for_selector(".tile.self.hand-up")
    await ben.wait_for_selector("#people li:has-text('Ann') .hand-flag")
    await ben.wait_for_selector(".tile.hand-up:has-text('Ann')")
    # And it still goes down with the button.
    await ann.click("#hand")
    await wait_for(lambda: all(p.hand is None for p in room.participants.values()), timeout=10)
    await ben.wait_for_selector("#people li:has-text('Ann') .hand-flag", state="detached")


async def test_a_host_back_after_leaving_sees_only_who_waits_now(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    hana = await new_page(browser)
    await join_meeting(hana, local(client, minted.host_url), "Hana")
    gus = await new_page(browser)
    await join_meeting(gus, local(client, minted.url), "Gus")
    await more(hana, "Lock meeting")
    await gus.wait_for_selector("#locked-badge:not([hidden])")
    knockers = []
    for name in ("Nia", "Oli"):
        knocker = await connect(client, minted.meeting.id)
        await knocker.send({"type": "join", "name": name})
        await knocker.next("waiting")
        knockers.append(knocker)
    await hana.wait_for_selector("#lobby li:has-text('Oli')")
    assert await hana.eval_on_selector_all("#lobby li", "els => els.length") == 2

    await hana.click("#leave")
    await hana.wait_for_selector("#left:not([hidden])")
    for knocker in knockers:  # they close their tabs
        await knocker.ws.close()
    room = room_of(client, minted.meeting.id)
    assert room is not None
    await wait_for(lambda: not room.lobby, timeout=10)
    # Nobody waits now, and the meeting is still locked: a new knock shows alone.
    await hana.click("#rejoin")
    await hana.wait_for_selector("#prejoin:not([hidden])")
    await hana.click("#join")
    await hana.wait_for_selector(".tile.self")
    await hana.wait_for_selector("#locked-badge:not([hidden])")
    assert await hana.is_hidden("#lobby-panel")
    assert await hana.eval_on_selector_all("#lobby li", "els => els.length") == 0
    late = await connect(client, minted.meeting.id)
    await late.send({"type": "join", "name": "Pat"})
    await late.next("waiting")
    await hana.wait_for_selector("#lobby li:has-text('Pat')")
    assert await hana.eval_on_selector_all("#lobby li", "els => els.map(li => li.textContent)") == [
        "PatAdmitDeny"]
    await hana.click("#lobby li:has-text('Pat') button:has-text('Admit')")
    await late.next("welcome")
    await late.ws.close()


async def test_someone_asking_to_join_too_often_is_told_that_and_not_that_the_lobby_is_full(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    hana = await new_page(browser)
    await join_meeting(hana, local(client, minted.host_url), "Hana")
    await more(hana, "Lock meeting")
    await hana.wait_for_selector("#locked-badge:not([hidden])")
    pat = await new_page(browser)
    await pat.goto(local(client, minted.url))
    await pat.wait_for_selector("#join:not([disabled])")
    await pat.fill("#name", "Pat")
    # Three knocks from the same address a moment before (the limiter's burst): the lobby has
    # room for many more, but this address has asked too often.
    knockers = []
    for name in ("Nia", "Oli", "Ros"):
        knocker = await connect(client, minted.meeting.id)
        await knocker.send({"type": "join", "name": name})
        await knocker.next("waiting")
        knockers.append(knocker)
    await pat.click("#join")
    await pat.wait_for_selector("#left:not([hidden])")
    told = await pat.text_content("#left-message")
    assert "several times in a row" in told and "full" not in told
    for knocker in knockers:
        await knocker.ws.close()


async def test_the_pre_join_screen_after_leaving_says_what_the_meeting_is_now(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    hana = await new_page(browser)
    await join_meeting(hana, local(client, minted.host_url), "Hana")
    gus = await new_page(browser)
    await join_meeting(gus, local(client, minted.url), "Gus")
    await more(hana, "Lock meeting")
    await gus.wait_for_selector("#locked-badge:not([hidden])")
    await gus.click("#leave")
    await gus.wait_for_selector("#left:not([hidden])")
    assert await gus.is_hidden("#locked-badge")
    await more(hana, "Lock meeting")  # unlocked while Gus is out
    await hana.wait_for_selector("#locked-badge", state="hidden")

    await gus.click("#rejoin")
    await gus.wait_for_selector("#join-status li:has-text('A host is in the meeting')")
    assert await gus.is_hidden("#locked-badge")
    assert "locked" not in await gus.text_content("#join-status")
    # Told again when it changes while he reads the screen.
    await more(hana, "Lock meeting")
    await gus.wait_for_selector("#join-status li:has-text('The meeting is locked')")
    await gus.wait_for_selector("#locked-badge:not([hidden])")


async def test_a_hosts_own_pre_join_says_they_join_as_host(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    hana = await new_page(browser)
    await hana.goto(local(client, minted.host_url))
    await hana.wait_for_selector("#join-status li:has-text('You join as the host')")
    assert "No host" not in await hana.text_content("#join-status")
    guest = await new_page(browser)
    await guest.goto(local(client, minted.url))
    await guest.wait_for_selector("#join-status li:has-text('No host is in the meeting yet')")
