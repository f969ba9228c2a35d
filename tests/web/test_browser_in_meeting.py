"""In the meeting, in Chromium: screen share, chat, active speaker, lock and lobby, remove."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page, Request

from meeting.models import Origin
from meeting.service import MeetingService, MintedMeeting
from tests.conftest import room_of, wait_for
from tests.web.meeting_page import more
from tests.web.test_browser_meeting import frames_keep_rising, join_meeting, names_shown, new_page

pytestmark = pytest.mark.browser

STAGE_FRAMES = """
async () => {
  const pc = window.meetnow.pc;
  const screen = window.meetnow.slots.find((s) => s.source === "screen" && s.direction === "receive");
  if (!pc || !screen) return 0;
  let frames = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.mid === screen.mid) frames = r.framesDecoded || 0;
  });
  return frames;
}
"""


@pytest.fixture
async def minted(meetings: MeetingService) -> MintedMeeting:
    return await meetings.mint("Team", Origin("web"))


def local(client: TestClient, url: str) -> str:
    """A minted link, made to point at the test server (which listens on its own port)."""
    return str(client.make_url(url.split("127.0.0.1:8080", 1)[1]))


async def test_screen_share_chat_and_active_speaker(browser: Browser, client: TestClient,
                                                    minted: MintedMeeting) -> None:
    origin = str(client.make_url("/")).rstrip("/")
    requests: list[str] = []
    ann, ben = await new_page(browser), await new_page(browser)
    for page in (ann, ben):
        page.on("request", lambda request: requests.append(request.url))
    await join_meeting(ann, local(client, minted.url), "Ann")
    await join_meeting(ben, local(client, minted.url), "Ben")
    await frames_keep_rising(ben, 1, timeout=10)

    # Screen share: a new, large video for the others, with frames decoding.
    await ann.click("button:has-text('Share screen')")
    await ben.wait_for_selector(".tile.screen:not(.self)")
    assert "Ann's screen" == await ben.text_content(".tile.screen .name-text")
    await wait_for(lambda: _positive(ben.evaluate(STAGE_FRAMES)), timeout=8, interval=0.1)
    first = await ben.evaluate(STAGE_FRAMES)
    await wait_for(lambda: _above(ben.evaluate(STAGE_FRAMES), first + 5), timeout=5, interval=0.1)
    stage = await ben.eval_on_selector(".tile.screen", "el => el.getBoundingClientRect().width")
    tile = await ben.eval_on_selector(".tile:not(.self):not(.screen)", "el => el.getBoundingClientRect().width")
    assert stage > tile
    await ann.click("button:has-text('Stop sharing')")
    await ben.wait_for_selector(".tile.screen", state="detached")
    await frames_keep_rising(ben, 1)  # the camera grid is back and still live

    # Chat: name, time, and the text shown as text.
    await ben.click("#chat-toggle")
    await ann.click("#chat-toggle")
    hint = "() => getComputedStyle(document.getElementById('messages'), '::before').content"
    assert "No messages yet" in await ben.evaluate(hint)  # an empty drawer says so
    hostile = '<img src=x onerror="document.title=\'pwned\'"><b>hi</b>'
    await ann.fill("#message", hostile)
    await ann.click("button:has-text('Send')")
    await ben.wait_for_selector("#messages li")
    assert await ben.text_content("#messages li .sender") == "Ann"
    assert await ben.text_content("#messages li .text") == hostile
    assert await ben.eval_on_selector_all("#messages img, #messages b", "els => els.length") == 0
    assert await ben.title() != "pwned"
    assert await ben.evaluate(hint) == "none"
    assert await ann.input_value("#message") == ""

    # Active speaker: the fake microphone beeps, so someone is highlighted.
    await ben.wait_for_selector(".tile.speaking", timeout=8000)
    assert await ben.eval_on_selector_all("#people li", "els => els.length") == 2

    # Nothing in the whole meeting was fetched from anywhere but this server.
    assert requests and all(url.startswith(origin + "/") for url in requests), [
        u for u in requests if not u.startswith(origin + "/")]


async def _positive(result) -> bool:
    return (await result) > 0


async def _above(result, floor: int) -> bool:
    return (await result) > floor


async def test_lock_lobby_admit_remove(browser: Browser, client: TestClient, minted: MintedMeeting) -> None:
    host = await new_page(browser)
    await join_meeting(host, local(client, minted.host_url), "Hana")
    guest = await new_page(browser)
    await join_meeting(guest, local(client, minted.url), "Gus")
    await host.wait_for_selector("#people li:has-text('Gus') button:has-text('Remove')")
    assert await guest.is_hidden("#lock")  # guests have no host controls
    # "Ask to mute" asks: Gus stays unmuted until he answers, and the host sees the answer.
    await host.click("#people li:has-text('Gus') button:has-text('Ask to mute')")
    prompt = await guest.wait_for_selector(".toast.prompt:has-text('Hana asks you to mute')")
    assert await guest.get_attribute("#mute", "aria-pressed") == "true"
    await prompt.eval_on_selector("button:has-text('Mute')", "b => b.click()")
    assert await guest.get_attribute("#mute", "aria-pressed") == "false"
    await host.wait_for_selector("#people li:has-text('Gus') .state:has-text('mic off')")
    await more(host, "Lock meeting")
    await guest.wait_for_selector("#locked-badge:not([hidden])")

    newcomer = await new_page(browser)
    await newcomer.goto(local(client, minted.url))
    await newcomer.fill("#name", "Nia")
    await newcomer.click("button:has-text('Join')")
    await newcomer.wait_for_selector("#waiting:not([hidden])")
    # Waiting: no names, no media, no peer connection.
    assert await newcomer.evaluate("() => window.meetnow.pc") is None
    assert await newcomer.eval_on_selector_all(".tile, #people li", "els => els.length") == 0
    await host.wait_for_selector("#lobby li:has-text('Nia')")
    await host.click("#lobby li:has-text('Nia') button:has-text('Admit')")
    await newcomer.wait_for_selector("#room:not([hidden])")
    await frames_keep_rising(newcomer, 2, timeout=10)
    assert sorted(await names_shown(newcomer)) == ["Gus", "Hana"]

    await host.click("#people li:has-text('Gus') button:has-text('Remove')")
    await guest.wait_for_selector("#left:not([hidden])")
    assert "removed" in await guest.text_content("#left-message")
    await wait_for(lambda: _lacks(host, "Gus"), timeout=3)
    # Back while the meeting is locked: the lobby again, not the meeting.
    await guest.click("button:has-text('Rejoin')")
    await guest.click("button:has-text('Join')")
    await guest.wait_for_selector("#waiting:not([hidden])")
    await host.wait_for_selector("#lobby li:has-text('Gus')")

    host.on("dialog", lambda dialog: dialog.accept())
    await more(host, "End meeting for all")
    for page in (newcomer, guest, host):
        await page.wait_for_selector("#left:not([hidden])")
    assert "ended" in await newcomer.text_content("#left-message")


async def _lacks(page: Page, name: str) -> bool:
    return name not in await names_shown(page)


async def test_join_flood_leaves_a_meeting_in_progress_undisturbed(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    import aiohttp

    ann, ben = await new_page(browser), await new_page(browser)
    await join_meeting(ann, local(client, minted.url), "Ann")
    await join_meeting(ben, local(client, minted.url), "Ben")
    await frames_keep_rising(ben, 1, timeout=10)
    ws_url = local(client, minted.url).replace("http://", "ws://") + "/ws"
    answers: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(60):  # bounded: 60 attempts, each closed at once
            async with http.ws_connect(ws_url) as ws:
                await ws.send_json({"type": "join", "name": "flood", "publish": []})
                reply = await ws.receive_json(timeout=5)
                kind = reply.get("code") or reply["type"]
                answers[kind] = answers.get(kind, 0) + 1
    assert answers.get("rate-limited", 0) >= 45, answers
    room = room_of(client, minted.meeting.id)
    await wait_for(lambda: len(room.participants) == 2, timeout=10)
    for page in (ann, ben):
        await frames_keep_rising(page, 1)
