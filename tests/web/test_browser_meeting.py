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


NO_CAMERA = """
const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = (c) => c.video
  ? Promise.reject(new DOMException("Requested device not found", "NotFoundError")) : real(c);
"""
NO_DEVICES = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""


async def new_page(browser: Browser, init_script: str | None = None) -> Page:
    context = await browser.new_context()
    if init_script:
        await context.add_init_script(init_script)
    return await context.new_page()


async def test_without_camera_or_any_device_people_still_join_and_are_told_why(
    browser: Browser, meeting_url: str
) -> None:
    ann = await new_page(browser)
    await join_meeting(ann, meeting_url, "Ann")
    ben = await new_page(browser, NO_CAMERA)
    await join_meeting(ben, meeting_url, "Ben")
    cat = await new_page(browser, NO_DEVICES)
    await join_meeting(cat, meeting_url, "Cat")
    assert "audio only (NotFoundError)" in await ben.text_content("#device-note")
    assert "listen-only" in await cat.text_content("#device-note")
    assert await cat.is_disabled("#mute") and await cat.is_disabled("#camera")

    async def cat_gets_ann_video_and_ben_audio() -> bool:
        media = await remote_media(cat)
        return len(media) == 2 and max(m["frames"] for m in media.values()) > 0 and all(
            m["energy"] > 0 for m in media.values())
    await wait_for(cat_gets_ann_video_and_ben_audio, timeout=10, interval=0.1)
    # Ben shows no video to Ann: a tile with his initial instead of a picture.
    await ann.wait_for_selector(".tile.no-video:has-text('Ben')")
    await ann.wait_for_selector(".tile.no-video:has-text('Cat')")


async def test_page_reconnects_by_itself_after_the_connection_drops(
    browser: Browser, meeting_url: str, client: TestClient
) -> None:
    from web.keys import SESSIONS

    ann = await new_page(browser)
    await join_meeting(ann, meeting_url, "Ann")
    ben = await new_page(browser)
    await join_meeting(ben, meeting_url, "Ben")
    await frames_keep_rising(ann, 1, timeout=10)
    [session] = client.server.app[SESSIONS].all()
    [ben_conn] = [c for c in session.conns.values() if c.participant and c.participant.name == "Ben"]
    ben_id = ben_conn.participant.id
    await ben_conn.channel.ws.close()  # a network blip, as the server sees it

    async def ben_is_back() -> bool:
        names = [p.name for p in session.room.participants.values()]
        return sorted(names) == ["Ann", "Ben"] and ben_id not in session.room.participants
    await wait_for(ben_is_back, timeout=8)
    await wait_for(lambda: _shows(ann, "Ben"), timeout=5)
    await frames_keep_rising(ben, 1, timeout=10)
    await frames_keep_rising(ann, 1, timeout=10)


async def _shows(page: Page, name: str) -> bool:
    return name in await names_shown(page)
