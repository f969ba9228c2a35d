"""The meeting page's layout in Chromium at 1366x768 and at 390x844 (a phone), with four people
(two browsers, two synthetic peers) through recording, two people sharing at once, a lobby and
an open chat: tiles never overlap, every name shows, every control is on screen."""

from __future__ import annotations

from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page

from meeting.models import Origin
from meeting.service import MeetingService, MintedMeeting
from tests.conftest import wait_for
from tests.web.meeting_page import DESKTOP, PHONE, check_sizes, layout_problems, more, settled, tile_boxes
from tests.web.synthetic_guest import SyntheticGuest
from tests.web.test_browser_in_meeting import STAGE_FRAMES, local
from tests.web.test_browser_meeting import frames_keep_rising, join_meeting

pytestmark = pytest.mark.browser

# The recording badge sits whole inside the header and nothing covers it.
BADGE_IN_HEADER = """() => {
  const bar = document.querySelector(".bar").getBoundingClientRect();
  const badge = document.getElementById("recording-badge");
  const r = badge.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return r.height > 0 && r.height < 32 && r.top >= bar.top && r.bottom <= bar.bottom && r.right <= bar.right
    && hit === badge;
}"""
LONG_URL = "https://example.org/" + "a-very-long-path-segment/" * 16 + "?q=" + "x" * 120


@pytest.fixture
async def minted(meetings: MeetingService) -> MintedMeeting:
    return await meetings.mint("Layout", Origin("web"))


@pytest.fixture
async def synthetic() -> AsyncIterator[list[SyntheticGuest]]:
    guests: list[SyntheticGuest] = []
    yield guests
    for guest in guests:
        await guest.close()


async def desktop_page(browser: Browser) -> Page:
    context = await browser.new_context(viewport=DESKTOP)
    return await context.new_page()


async def tiles_shown(page: Page) -> int:
    return len(await tile_boxes(page))


async def test_four_people_at_desktop_and_phone_size_through_recording_sharing_lobby_and_chat(
    browser: Browser, client: TestClient, minted: MintedMeeting, synthetic: list[SyntheticGuest]
) -> None:
    hana = await desktop_page(browser)
    await join_meeting(hana, local(client, minted.host_url), "Hana")

    # Alone: the invitation is offered, and the self view stays modest (never a wall of oneself).
    await hana.wait_for_selector("#alone:not([hidden])")
    [me] = await tile_boxes(hana)
    assert me["self"] and me["w"] <= 480, me
    assert await hana.input_value("#invite-link") == local(client, minted.url)
    await check_sizes([hana], "alone")

    ben = await desktop_page(browser)
    await join_meeting(ben, local(client, minted.url), "Ben")
    for name in ("Syd", "Sue"):
        synthetic.append(await SyntheticGuest.join(client, minted.meeting.id, name))
    for page in (hana, ben):
        await frames_keep_rising(page, 3, timeout=20)
        await wait_for(lambda p=page: _tiles(p, 4), timeout=5)
    assert await hana.is_hidden("#alone")

    # Four people at desktop size: two rows of two, each tile in its camera's 4:3 shape and the
    # picture fitted, not cropped.
    boxes = await tile_boxes(hana)
    assert len({b["x"] for b in boxes}) == 2 and len({b["y"] for b in boxes}) == 2, boxes
    assert all(abs(b["w"] / b["h"] - 4 / 3) < 0.05 for b in boxes), boxes
    assert set(await hana.eval_on_selector_all(
        "#tiles video", "els => els.map(v => getComputedStyle(v).objectFit)")) == {"contain"}
    await check_sizes([hana, ben], "four people")

    # Pin makes one tile large; speaker view and a hidden self view hold the layout too.
    await hana.hover(".tile:has-text('Syd')")
    await hana.click(".tile:has-text('Syd') button[aria-label='Pin Syd']")
    assert await hana.get_attribute(".tile:has-text('Syd') .pin", "aria-pressed") == "true"
    boxes = await tile_boxes(hana)
    [main] = [b for b in boxes if b["main"]]
    assert main["name"] == "Syd" and all(main["w"] > 2 * b["w"] for b in boxes if not b["main"])
    await check_sizes([hana], "pinned")
    await hana.click(".tile:has-text('Syd') button[aria-label='Unpin Syd']")
    await more(hana, "Speaker view")
    await hana.wait_for_selector("#view-speaker[aria-pressed='true']", state="attached", timeout=5000)
    assert sum(b["main"] for b in await tile_boxes(hana)) == 1
    await more(hana, "Hide self view")
    assert [b["name"] for b in await tile_boxes(hana) if b["self"]] == []
    await check_sizes([hana], "speaker view, self hidden")
    await more(hana, "Hide self view")
    await more(hana, "Grid view")
    assert len(await tile_boxes(hana)) == 4 and not any(b["main"] for b in await tile_boxes(hana))

    # Recording: the badge sits in the header, which keeps its height, and Stop recording and
    # Leave stay on screen at 1366x768.
    await hana.click("#record")
    for page in (hana, ben):
        await page.wait_for_selector("#recording-badge", state="visible")
    assert await hana.text_content("#record") == "Stop recording"
    for size in (DESKTOP, PHONE):
        await hana.set_viewport_size(size)
        assert await hana.eval_on_selector(".bar", "el => el.getBoundingClientRect().height") <= 48
        assert await hana.evaluate(BADGE_IN_HEADER), size
    await hana.set_viewport_size(DESKTOP)
    for control in ("#record", "#leave"):
        box = await hana.eval_on_selector(control, "el => el.getBoundingClientRect().bottom")
        assert box <= DESKTOP["height"], control
    await check_sizes([hana, ben], "recording")

    # Two people share at once: each sees the other's screen as the large tile and their own
    # only as a "you are presenting" card, never live (no hall of mirrors).
    await hana.click("#share")
    await ben.click("#share")
    for page, other in ((hana, "Ben"), (ben, "Hana")):
        await page.wait_for_selector(f".tile.screen.main:has-text(\"{other}'s screen\")", timeout=10000)
        await wait_for(lambda p=page: _positive(p.evaluate(STAGE_FRAMES)), timeout=10, interval=0.1)
        own = await page.query_selector_all(".tile.screen.self")
        assert len(own) == 1
        assert await own[0].evaluate("el => el.classList.contains('presenting') && !el.classList.contains('main')")
        assert await own[0].eval_on_selector("video", "v => v.srcObject") is None
        assert await page.eval_on_selector_all(".tile.screen", "els => els.length") == 2
    await check_sizes([hana, ben], "two sharing")
    await hana.click("#share")
    await ben.click("#share")
    for page in (hana, ben):
        await page.wait_for_selector(".tile.screen", state="detached")

    # Lobby: a newcomer sees the recording notice before joining, and waits with her preview.
    await more(hana, "Lock meeting")
    cat = await desktop_page(browser)
    await cat.goto(local(client, minted.url))
    assert await cat.is_visible("#prejoin #recording-notice")
    await cat.fill("#name", "Cat")
    await cat.click("#join")
    await cat.wait_for_selector("#waiting:not([hidden])")
    assert await cat.is_visible("#waiting #preview") and await cat.is_visible("#waiting #recording-notice")
    await hana.wait_for_selector("#lobby li:has-text('Cat')")
    await check_sizes([hana], "lobby")
    await cat.set_viewport_size(PHONE)
    assert await cat.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
    await hana.click("#lobby li:has-text('Cat') button:has-text('Deny')")
    await cat.wait_for_selector("#left:not([hidden])")

    # Chat, closed on a phone: a long link counts as unread, then opens as a link that tells
    # its target nothing, and widens nothing.
    await ben.set_viewport_size(PHONE)
    await settled(ben)
    assert await ben.get_attribute("#chat-toggle", "aria-pressed") == "false"
    await hana.click("#chat-toggle")
    await hana.fill("#message", f"the notes: {LONG_URL} (see there)")
    await hana.press("#message", "Enter")
    await ben.wait_for_selector("#unread:not([hidden])")
    assert await ben.text_content("#unread .n") == "1"
    await ben.click("#chat-toggle")
    assert await ben.is_hidden("#unread")
    link = await ben.wait_for_selector("#messages a")
    assert await link.get_attribute("href") == LONG_URL
    assert await link.get_attribute("target") == "_blank"
    assert await link.get_attribute("rel") == "noopener noreferrer"
    assert await ben.text_content("#messages li:last-child .text") == f"the notes: {LONG_URL} (see there)"
    assert not await layout_problems(ben)
    # The history has room to read on a phone, and still leaves the video above it.
    assert await ben.eval_on_selector("#messages", "el => el.clientHeight") >= 200
    assert len(await tile_boxes(ben)) == 4
    await check_sizes([hana, ben], "chat open")

    await hana.click("#record")
    await hana.wait_for_selector("#recording-badge", state="hidden")


async def _tiles(page: Page, count: int) -> bool:
    return await tiles_shown(page) == count


async def _positive(result) -> bool:
    return (await result) > 0


async def test_grid_and_quality_rules(browser: Browser, client: TestClient) -> None:
    """The pure rules behind the layout and the connection indicator, run in the page's own
    modules: the grid maximises tile size for the count and the window, quality follows
    loss and round-trip time."""
    page = await desktop_page(browser)
    await page.goto(str(client.make_url("/")))
    grids = await page.evaluate("""async () => {
      const { bestGrid } = await import("/static/meeting-layout.js");
      const shape = (n, w, h, a) => { const g = bestGrid(n, w, h, a); return [g.cols, g.rows]; };
      return {four: shape(4, 1000, 600, 4 / 3), three: shape(3, 1000, 600, 4 / 3), two: shape(2, 1000, 600, 16 / 9),
              twoTall: shape(2, 380, 700, 4 / 3), nine: shape(9, 1300, 700, 16 / 9), one: shape(1, 1000, 600, 4 / 3)};
    }""")
    assert grids == {"four": [2, 2], "three": [2, 2], "two": [2, 1], "twoTall": [1, 2], "nine": [3, 3], "one": [1, 1]}
    levels = await page.evaluate("""async () => {
      const { assessQuality } = await import("/static/meeting-stats.js");
      return [assessQuality({ loss: 0, rtt: 0.02 }), assessQuality({ loss: 0.05, rtt: 0.02 }),
              assessQuality({ loss: 0.2, rtt: 0.02 }), assessQuality({ loss: 0, rtt: 0.8 }),
              assessQuality({ loss: 0, rtt: 0.02, limited: true }), assessQuality({})];
    }""")
    assert levels == ["good", "fair", "poor", "poor", "fair", "unknown"]
