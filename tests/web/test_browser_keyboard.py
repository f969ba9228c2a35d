"""The meeting page with the keyboard alone, and what it tells people as things happen."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page

from meeting.models import Origin
from meeting.service import MeetingService, MintedMeeting
from tests.web.test_browser_in_meeting import local
from tests.web.test_browser_meeting import join_meeting, new_page

pytestmark = pytest.mark.browser

FOCUSED = """() => {
  const el = document.activeElement;
  const where = el.closest(".controls") ? "controls" : el.closest("#people-panel") ? "people"
    : el.closest("#tiles") ? "tiles" : el.closest("#side") ? "side" : "other";
  return [el.id || el.tagName.toLowerCase(), where];
}"""


@pytest.fixture
async def minted(meetings: MeetingService) -> MintedMeeting:
    return await meetings.mint("Keys", Origin("web"))


async def tab_to(page: Page, element_id: str, limit: int = 60) -> list[list[str]]:
    """Press Tab until ``element_id`` has the focus; returns what was focused on the way."""
    seen: list[list[str]] = []
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(FOCUSED)
        seen.append(focused)
        if focused[0] == element_id:
            return seen
    raise AssertionError(f"Tab never reached #{element_id}: {seen}")


async def test_keyboard_alone_joins_mutes_unmutes_and_leaves(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    ann = await new_page(browser)
    await join_meeting(ann, local(client, minted.url), "Ann")
    ben = await new_page(browser)
    await ben.goto(local(client, minted.url))
    await ben.wait_for_function("() => !document.getElementById('pre-mic').disabled")
    await tab_to(ben, "name")
    await ben.keyboard.type("Ben")
    await ben.keyboard.press("Enter")
    await ben.wait_for_selector(".tile.self")
    await ann.wait_for_selector(".toast:has-text('Ben joined.')")

    # The controls come before the people list in the tab order.
    seen = await tab_to(ben, "leave")
    places = [where for _, where in seen]
    assert places[0] == "controls", seen
    seen += await tab_to(ben, "mute")  # round again, past the tiles and the people panel
    places = [where for _, where in seen]
    assert "people" in places and places.index("controls") < places.index("people"), seen

    # Ctrl+D mutes and unmutes; the button says so (aria-pressed) and the others see it.
    assert await ben.get_attribute("#mute", "aria-pressed") == "true"
    assert await ben.get_attribute("#mute", "aria-keyshortcuts") == "Control+D Meta+D"
    await ben.keyboard.press("Control+d")
    assert await ben.get_attribute("#mute", "aria-pressed") == "false"
    await ann.wait_for_selector(".tile:has-text('Ben') .flag[title='Microphone off']")
    await ben.keyboard.press("Control+d")
    assert await ben.get_attribute("#mute", "aria-pressed") == "true"
    await ann.wait_for_selector(".tile:has-text('Ben') .flag[title='Microphone off']", state="detached")
    # Space on the focused button works the same.
    await ben.keyboard.press("Space")
    await ann.wait_for_selector(".tile:has-text('Ben') .flag[title='Microphone off']")
    await ben.keyboard.press("Space")
    await ann.wait_for_selector(".tile:has-text('Ben') .flag[title='Microphone off']", state="detached")
    # Ctrl+E turns the camera off and on.
    await ben.keyboard.press("Control+e")
    await ann.wait_for_selector(".tile.no-video:has-text('Ben')")
    assert await ben.get_attribute("#camera", "aria-pressed") == "false"
    await ben.keyboard.press("Control+e")
    await ann.wait_for_selector(".tile:not(.no-video):has-text('Ben')")

    # The active speaker is shown by more than colour: a speaking mark with words beside the
    # name. And each tile shows its connection, here on loopback, as good.
    await ann.wait_for_selector(".tile.speaking .speaking-flag .visually-hidden:has-text('Speaking')", state="attached")
    quality = await ann.wait_for_selector(".tile:has-text('Ben') .quality[data-level='good']", timeout=10000)
    assert await quality.get_attribute("aria-label") == "Connection: good"

    await tab_to(ben, "leave")
    await ben.keyboard.press("Enter")
    await ben.wait_for_selector("#left:not([hidden])")
    await ann.wait_for_selector(".toast:has-text('Ben left.')")
    await ann.click("#chat-toggle")
    assert [await li.text_content() for li in await ann.query_selector_all("#messages li.system .text")] == [
        "Ben joined", "Ben left"]
