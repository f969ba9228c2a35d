"""Simulcast in Chromium: two layers from three people on, each tile the layer it needs."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page

from meeting import ids
from meeting.media.quality import Downlink
from meeting.models import Origin
from meeting.service import MeetingService
from tests.conftest import wait_for
from tests.web.test_browser_meeting import join_meeting, new_page

pytestmark = pytest.mark.browser

# What a page receives per remote participant (by name), and sends per layer (by RID).
MEDIA = """
async () => {
  const pc = window.meetnow.pc;
  const names = {};
  for (const [id, entry] of window.meetnow.participants) names[id] = entry.info.name;
  const slots = Object.fromEntries(window.meetnow.slots.map((s) => [s.mid, s]));
  const got = {}, sent = {};
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video" && slots[r.mid] && slots[r.mid].direction === "receive") {
      got[names[slots[r.mid].participant]] = {width: r.frameWidth || 0, frames: r.framesDecoded || 0};
    } else if (r.type === "outbound-rtp" && r.kind === "video") {
      sent[r.rid] = {width: r.frameWidth || 0, bytes: r.bytesSent || 0, mode: r.scalabilityMode};
    }
  });
  return {got, sent};
}
"""
PIN = """(name) => { for (const e of window.meetnow.participants.values())
  if (e.info.name === name) e.tile.querySelector("button.pin").click(); }"""


async def media(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(MEDIA)
    return result


async def sends_layers(page: Page, rids: set[str]) -> bool:
    """``page`` sends exactly these layers (bytes growing), each of its own size."""
    first = (await media(page))["sent"]
    await page.wait_for_timeout(600)  # bytes sent over a moment
    later = (await media(page))["sent"]
    growing = {rid for rid, layer in later.items() if layer["bytes"] > first.get(rid, {"bytes": 0})["bytes"]}
    return growing == rids


async def receives(page: Page, name: str, low: bool | None = None) -> bool:
    """``page`` decodes ``name``'s video (from the low, 320 px, or the high, 640 px, layer)."""
    first = (await media(page))["got"].get(name)
    await page.wait_for_timeout(300)
    later = (await media(page))["got"].get(name)
    if not first or not later or later["frames"] <= first["frames"]:
        return False
    if low is None:
        return True
    return later["width"] <= 320 if low else later["width"] >= 600


async def people(browser: Browser, link: str, names: tuple[str, ...]) -> list[Page]:
    pages = []
    for who in names:
        page = await new_page(browser)
        await join_meeting(page, link, who)
        pages.append(page)
    return pages


async def check_layers_follow_tiles(pages: list[Page]) -> None:
    ann, ben, cat = pages
    for page in pages:
        await wait_for(lambda p=page: sends_layers(p, {"lo", "hi"}), timeout=20, interval=0.2)
    sent = (await media(ann))["sent"]
    assert sent["lo"]["width"] == 320 and sent["hi"]["width"] == 640
    assert {layer["mode"] for layer in sent.values()} == {"L1T3"}
    # Three tiles side by side on a 1280 px page are ~400 px wide: the low layer suits them.
    await wait_for(lambda: receives(ann, "Ben", low=True), timeout=15, interval=0.2)
    # Pinned, Ben is shown large and Cat as a thumbnail: Ben comes in high, Cat stays low.
    await ann.evaluate(PIN, "Ben")
    await wait_for(lambda: receives(ann, "Ben", low=False), timeout=15, interval=0.2)
    await wait_for(lambda: receives(ann, "Cat", low=True), timeout=5, interval=0.2)
    # The others' choices are their own.
    await wait_for(lambda: receives(ben, "Ann", low=True), timeout=5, interval=0.2)


async def test_from_three_people_each_sends_two_layers_and_each_tile_gets_the_one_it_needs(
    browser: Browser, client: TestClient, meetings: MeetingService
) -> None:
    minted = await meetings.mint("Layers", Origin("web"))
    link = str(client.make_url(f"/m/{minted.meeting.id}"))
    ann, ben = await people(browser, link, ("Ann", "Ben"))
    # Two people: the one viewer's bandwidth shapes the one stream; no low layer is made.
    await wait_for(lambda: sends_layers(ann, {"hi"}), timeout=15, interval=0.2)
    [cat] = await people(browser, link, ("Cat",))
    await check_layers_follow_tiles([ann, ben, cat])


async def test_an_encrypted_meeting_decrypts_every_layer(
    browser: Browser, client: TestClient, meetings: MeetingService
) -> None:
    minted = await meetings.mint("Private layers", Origin("web"), e2ee=True)
    link = f"{client.make_url(f'/m/{minted.meeting.id}')}#key={ids.new_media_key()}"
    pages = await people(browser, link, ("Ann", "Ben", "Cat"))
    await check_layers_follow_tiles(pages)
    for page in pages:
        assert await page.eval_on_selector_all(".tile.undecryptable", "els => els.length") == 0


async def test_a_video_paused_to_save_bandwidth_says_so_and_comes_back(
    browser: Browser, client: TestClient, meetings: MeetingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    minted = await meetings.mint("Paused", Origin("web"))
    link = str(client.make_url(f"/m/{minted.meeting.id}"))
    ann, ben = await people(browser, link, ("Ann", "Ben"))
    await wait_for(lambda: receives(ann, "Ben"), timeout=15, interval=0.2)
    # Every viewer's link now seems to take almost nothing: video pauses, sound goes on.
    monkeypatch.setattr(Downlink, "estimate", lambda self, sending=0.0: 20_000.0)
    note = await ann.wait_for_selector(".tile.bandwidth-paused .paused-note", timeout=10000)
    assert await note.text_content() == "Video paused to save bandwidth"
    assert await note.is_visible()
    frames = (await media(ann))["got"]["Ben"]["frames"]
    await ann.wait_for_timeout(1000)
    assert (await media(ann))["got"]["Ben"]["frames"] <= frames + 2  # nothing more is sent
    monkeypatch.undo()
    await ann.wait_for_selector(".tile.bandwidth-paused", state="detached", timeout=10000)
    assert await ann.is_hidden(".paused-note")
    await wait_for(lambda: receives(ann, "Ben"), timeout=10, interval=0.2)
