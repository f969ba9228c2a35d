"""Long titles and names, phones and laptops: what must stay in sight does, in Chromium."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page

from meeting.models import Origin
from meeting.service import MeetingService, MintedMeeting
from tests.web.meeting_page import DESKTOP, PHONE, SHOTS, more, settled
from tests.web.test_browser_gestures import open_people
from tests.web.test_browser_in_meeting import local
from tests.web.test_browser_meeting import join_meeting, new_page

pytestmark = pytest.mark.browser

LONG_TITLE = "Quarterly planning review with the whole platform team and guests"
LONG_NAME = "Hana Desktop-with-a-rather-long-surname Johansson-Whitfield"

# Where the header's parts are, and whether the title is cut short.
HEADER = """
() => {
  const box = (id) => { const r = document.getElementById(id).getBoundingClientRect();
                        return {left: r.left, right: r.right, width: r.width}; };
  const title = document.getElementById("meeting-title");
  return {width: window.innerWidth, title: box("meeting-title"), locked: box("locked-badge"),
          recording: box("recording-badge"), cut: title.scrollWidth > title.clientWidth};
}
"""

# One person's row in the people list: the top of each part of its first line, and whether
# "(you)" and the host tag are wholly in the panel.
ROW = """
(row) => {
  const panel = document.getElementById("people-panel").getBoundingClientRect();
  const part = (sel) => { const el = row.querySelector(sel); if (!el) return null;
                          const r = el.getBoundingClientRect();
                          return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width}; };
  const name = row.querySelector(".who-name");
  return {panel: {left: panel.left, right: panel.right}, hand: part(".hand-flag"), who: part(".who"),
          you: part(".you"), tag: part(".tag"), cut: name.scrollWidth > name.clientWidth};
}
"""

# A tile's name: the part after the name (" (you)", "'s screen") wholly inside the tile.
SUFFIX_SHOWN = """
(tile) => {
  const t = tile.getBoundingClientRect(), s = tile.querySelector(".name-suffix").getBoundingClientRect();
  const label = tile.querySelector(".name-text");
  return s.width > 0 && s.left >= t.left && s.right <= t.right + 0.5
    && s.right <= label.getBoundingClientRect().right + 0.5;
}
"""


@pytest.fixture
async def minted(meetings: MeetingService) -> MintedMeeting:
    return await meetings.mint(LONG_TITLE, Origin("web"))


async def shot(page: Page, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=f"{SHOTS}/fit-{name}.png")


async def header_ok(page: Page, label: str) -> None:
    await settled(page)
    header: dict[str, Any] = await page.evaluate(HEADER)
    for badge in ("locked", "recording"):
        assert header[badge]["width"] > 0 and header[badge]["right"] <= header["width"], (label, header)
    assert header["title"]["right"] <= header["locked"]["left"], (label, header)
    if "phone" in label:
        assert header["cut"], (label, header)  # the title gave way


async def test_long_title_and_name_keep_badges_you_and_flags_in_sight_and_pre_join_fits(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    hana = await new_page(browser)
    await hana.set_viewport_size(PHONE)
    await join_meeting(hana, local(client, minted.host_url), LONG_NAME)
    gus = await new_page(browser)
    await join_meeting(gus, local(client, minted.url), "Gus")
    await more(hana, "Lock meeting")
    await hana.click("#record")
    await hana.wait_for_selector("#recording-badge:not([hidden])")
    await hana.wait_for_selector("#locked-badge:not([hidden])")
    await hana.click("#hand")
    await gus.wait_for_selector(f"#people li:has-text('{LONG_NAME[:10]}') .hand-flag")

    for size, label in ((PHONE, "phone"), (DESKTOP, "desktop")):
        await hana.set_viewport_size(size)
        await open_people(hana)
        await header_ok(hana, label)
        row: dict[str, Any] = await hana.eval_on_selector("#people li:has(.you)", ROW)
        # One line: hand, name, "(you)" and the host tag side by side, all inside the panel.
        for part in ("hand", "you", "tag"):
            assert row[part] is not None and row[part]["width"] > 0, (label, row)
            assert row[part]["top"] < row["who"]["bottom"] and row[part]["bottom"] > row["who"]["top"], (label, row)
            assert row[part]["right"] <= row["panel"]["right"] + 0.5, (label, row)
        assert row["hand"]["right"] <= row["who"]["left"] + 0.5, (label, row)
        assert row["cut"], (label, row)
        assert await hana.eval_on_selector(".tile.self:not(.screen)", SUFFIX_SHOWN), label
        await shot(hana, f"long-name-{label}")

    # Someone about to join the locked, recorded meeting: on a laptop the whole card fits,
    # Join included, under a long title the header badges stay in sight.
    nia = await new_page(browser)
    await nia.set_viewport_size(DESKTOP)
    await nia.goto(local(client, minted.url))
    await nia.wait_for_selector("#join-status li:has-text('locked')")
    await nia.wait_for_selector("#recording-notice:not([hidden])")
    await nia.wait_for_function("() => !document.getElementById('join').disabled")
    await nia.wait_for_selector("#preview:not([hidden])")
    join = await nia.eval_on_selector("#join", "el => el.getBoundingClientRect().bottom")
    assert join <= DESKTOP["height"], f"Join ends at {join}"
    assert await nia.evaluate("document.documentElement.scrollHeight <= window.innerHeight")
    for size, label in ((PHONE, "phone"), (DESKTOP, "desktop")):
        await nia.set_viewport_size(size)
        await header_ok(nia, f"pre-join {label}")
        assert await nia.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        await shot(nia, f"prejoin-{label}")


async def test_a_shared_screen_keeps_its_suffix_and_strip_tiles_stay_uncovered_on_a_phone(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    hana = await new_page(browser)
    await join_meeting(hana, local(client, minted.host_url), LONG_NAME)
    # A phone: touch, no hover (the tiles' buttons cannot wait for a pointer over them).
    context = await browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True)
    gus = await context.new_page()
    await join_meeting(gus, local(client, minted.url), "Gus")
    assert await gus.evaluate("matchMedia('(hover: none)').matches")
    ida = await new_page(browser)
    await join_meeting(ida, local(client, minted.url), "Ida")
    await hana.click("#share")
    screen = await gus.wait_for_selector(".tile.screen:not(.self)")
    await settled(gus)
    assert await gus.text_content(".tile.screen .name-text") == f"{LONG_NAME}'s screen"
    assert await screen.evaluate(SUFFIX_SHOWN)
    # The strip under the screen: each small tile's own buttons cover a small corner only.
    covered = await gus.eval_on_selector_all(".tile.small", """tiles => tiles.map((tile) => {
        const t = tile.getBoundingClientRect();
        let area = 0;
        for (const b of tile.querySelectorAll('.tile-actions button')) {
          const r = b.getBoundingClientRect();
          if (r.width && getComputedStyle(b.parentElement).opacity !== '0') area += r.width * r.height;
        }
        return area / (t.width * t.height); })""")
    assert covered and max(covered) <= 0.06, covered
    await shot(gus, "share-phone")
    # The presenter's own card says it as the toolbar does.
    await hana.wait_for_selector(".presenting-card button:has-text('Stop sharing')")
    assert await hana.text_content("#share .label") == "Stop sharing"


@pytest.mark.parametrize("path", ["/", "/nowhere"])
async def test_pages_that_fit_do_not_scroll(browser: Browser, client: TestClient, path: str) -> None:
    page = await browser.new_page()
    for size in (PHONE, DESKTOP):
        await page.set_viewport_size(size)
        await page.goto(str(client.make_url(path)))
        assert await page.evaluate("document.documentElement.scrollHeight <= window.innerHeight"), size
