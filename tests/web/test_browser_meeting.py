"""People meeting through the page's own controls, in Debian's chromium, media through our SFU."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page

from meeting.models import Origin
from meeting.service import MeetingService
from tests.conftest import wait_for

pytestmark = pytest.mark.browser

# Inbound media per remote participant, keyed by the server's slot mapping (mid -> participant).
INBOUND = """
async () => {
  const pc = window.meetnow.pc;
  if (!pc) return {};
  const stats = await pc.getStats();
  const byMid = {};
  stats.forEach((r) => {
    if (r.type === "inbound-rtp") byMid[r.mid] = {kind: r.kind, frames: r.framesDecoded || 0,
                                                   energy: r.totalAudioEnergy || 0};
  });
  return byMid;
}
"""


async def join_meeting(page: Page, url: str, name: str) -> None:
    await page.goto(url)
    await page.fill("#name", name)
    await page.click("button:has-text('Join')")
    await page.wait_for_selector(".tile.self")


async def remote_media(page: Page) -> dict[str, dict[str, float]]:
    """participant id -> {"frames": video frames decoded, "energy": audio energy received}."""
    stats: dict[str, Any] = await page.evaluate(INBOUND)
    slots: list[dict[str, str]] = await page.evaluate("() => window.meetnow.slots")
    media: dict[str, dict[str, float]] = {}
    for slot in slots:
        if slot["direction"] != "receive" or slot["mid"] not in stats:
            continue
        entry = media.setdefault(slot["participant"], {"frames": 0, "energy": 0.0})
        entry["frames"] += stats[slot["mid"]]["frames"]
        entry["energy"] += stats[slot["mid"]]["energy"]
    return media


async def names_shown(page: Page) -> list[str]:
    return await page.eval_on_selector_all(".tile:not(.self) .name", "els => els.map(e => e.firstChild.textContent)")


async def frames_keep_rising(page: Page, count: int, timeout: float = 10.0) -> None:
    """Wait until ``count`` remote participants have decoded video and audio energy, then
    check every one of them decodes more frames a moment later."""
    async def ready() -> bool:
        media = await remote_media(page)
        good = [m for m in media.values() if m["frames"] > 0 and m["energy"] > 0]
        return len(good) >= count
    await wait_for(ready, timeout=timeout, interval=0.1)
    before = await remote_media(page)

    async def rising() -> bool:
        after = await remote_media(page)
        return all(after[p]["frames"] > before[p]["frames"] + 5 for p in before if before[p]["frames"])
    await wait_for(rising, timeout=5, interval=0.1)


@pytest.fixture
async def meeting_url(client: TestClient, meetings: MeetingService) -> str:
    minted = await meetings.mint("Browser test", Origin("web"))
    return str(client.make_url(f"/m/{minted.meeting.id}"))


async def test_three_people_see_and_hear_each_other_then_one_leaves_and_one_arrives(
    browser: Browser, meeting_url: str
) -> None:
    pages = []
    for name in ("Ann", "Ben", "Cat"):
        context = await browser.new_context()
        page = await context.new_page()
        await join_meeting(page, meeting_url, name)
        pages.append(page)
    for page in pages:
        await frames_keep_rising(page, 2, timeout=15)

    await pages[2].click("button:has-text('Leave')")
    left_at = time.monotonic()
    for page in pages[:2]:
        await wait_for(lambda p=page: _without(p, "Cat"), timeout=2)
    assert time.monotonic() - left_at < 2.5

    context = await browser.new_context()
    dan = await context.new_page()
    await join_meeting(dan, meeting_url, "Dan")
    joined_at = time.monotonic()

    async def dan_sees_video() -> bool:
        media = await remote_media(dan)
        return len([m for m in media.values() if m["frames"] > 0]) >= 2
    await wait_for(dan_sees_video, timeout=4, interval=0.05)
    print(f"late joiner's first remote frames after {time.monotonic() - joined_at:.2f} s")
    assert time.monotonic() - joined_at < 2.5
    for page in pages[:2] + [dan]:
        await frames_keep_rising(page, 2)
        assert sorted(await names_shown(page)) == sorted(
            {"Ann", "Ben", "Dan"} - {await page.input_value("#name")})


async def _without(page: Page, name: str) -> bool:
    return name not in await names_shown(page)
