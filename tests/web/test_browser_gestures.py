"""Raised hands, reactions and the host's tools, in Chromium: what each person sees of them."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page

from meeting.models import Origin
from meeting.service import MeetingService, MintedMeeting
from tests.conftest import room_of, wait_for
from tests.signaling_client import connect
from tests.web.meeting_page import DESKTOP, PHONE, SHOTS, check_sizes, more, settled
from tests.web.test_browser_in_meeting import local
from tests.web.test_browser_meeting import join_meeting, new_page
from web.keys import SESSIONS

pytestmark = pytest.mark.browser

THUMBS_UP = "\U0001F44D"


@pytest.fixture
async def minted(meetings: MeetingService) -> MintedMeeting:
    return await meetings.mint("Team", Origin("web"))


# Reactions last a few seconds on screen: each page keeps a log of the ones it showed (which
# tile, what), and of what it said in words, so a slow machine cannot miss them.
LOG_REACTIONS = """
() => {
  window.__reactions = [];
  window.__said = [];
  new MutationObserver((changes) => {
    for (const change of changes) for (const node of change.addedNodes) {
      if (node.classList && node.classList.contains("reaction")) {
        window.__reactions.push([node.closest(".tile").querySelector(".name-text").textContent, node.textContent]);
      } else if (node.parentElement && node.parentElement.id === "reactions-live") {
        window.__said.push(node.textContent);
      }
    }
  }).observe(document.getElementById("app"), { childList: true, subtree: true });
}
"""


async def reactions_shown(page: Page, count: int) -> list[list[str]]:
    """The first ``count`` reactions the page showed, as [tile name, emoji], once it has."""
    await page.wait_for_function(f"() => window.__reactions.length >= {count}")
    shown: list[list[str]] = await page.evaluate("() => window.__reactions")
    return shown[:count]


async def hand_order(page: Page) -> list[str]:
    """Names in the people list whose hand is up, top to bottom, with the place each shows."""
    return await page.eval_on_selector_all(
        "#people li", """rows => rows.filter(r => r.querySelector('.hand-flag')).map(r =>
            r.querySelector('.hand-place').textContent + ' ' + r.querySelector('.who-name').textContent
            + (r.querySelector('.you') ? r.querySelector('.you').textContent : ''))""")


async def open_people(page: Page) -> None:
    """Show the people list (it closes by itself when a test narrows the window to a phone)."""
    if await page.is_hidden("#people-panel"):
        await page.click("#people-toggle")


PEOPLE_PROBLEMS = """
() => {
  const panel = document.getElementById("people-panel"), problems = [];
  if (panel.scrollWidth > panel.clientWidth + 1) problems.push("the people list scrolls sideways");
  if (document.documentElement.scrollWidth > window.innerWidth) problems.push("the page scrolls sideways");
  const box = panel.getBoundingClientRect();
  for (const el of panel.querySelectorAll("#people li > *")) {
    const r = el.getBoundingClientRect();
    if (!r.width) continue;  // not shown now (the speaking flag while silent)
    if (r.left < box.left - 1 || r.right > box.right + 1) problems.push(`${el.textContent} sticks out of the list`);
  }
  return problems;
}
"""


async def check_people(page: Page, state: str) -> None:
    """The people list, open at phone and desktop size, fits its panel (names, flags, buttons)."""
    for size, label in ((PHONE, "phone"), (DESKTOP, "desktop")):
        await page.set_viewport_size(size)
        await open_people(page)
        await settled(page)
        name = await page.input_value("#name")
        if SHOTS:
            await page.screenshot(path=f"{SHOTS}/{state.replace(' ', '-')}-people-{label}-{name}.png")
        assert await page.evaluate(PEOPLE_PROBLEMS) == [], f"{state}, {label}, {name}"


async def inside_viewport(page: Page, selector: str) -> bool:
    box = await page.eval_on_selector(selector, "el => { const r = el.getBoundingClientRect();"
                                      " return [r.left, r.top, r.right, r.bottom]; }")
    size = page.viewport_size or DESKTOP
    return box[0] >= 0 and box[1] >= 0 and box[2] <= size["width"] and box[3] <= size["height"]


async def test_raised_hands_in_order_and_a_reaction_seen_by_the_others(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    ann, ben, cat = await new_page(browser), await new_page(browser), await new_page(browser)
    await join_meeting(ann, local(client, minted.host_url), "Ann")  # the host
    await join_meeting(ben, local(client, minted.url), "Ben")
    await join_meeting(cat, local(client, minted.url), "Cat")
    await ben.wait_for_selector(".tile:not(.self):has-text('Cat')")

    # Cat raises her hand, then Ben: everyone sees them in that order, on tiles and in the list.
    await cat.click("#hand")
    assert await cat.get_attribute("#hand", "aria-pressed") == "true"
    await ben.wait_for_selector(".toast:has-text('Cat raised their hand')")
    await ben.click("#hand")
    assert "Lower hand" in await ben.text_content("#hand")
    for page in (ann, ben, cat):
        await page.wait_for_function("() => document.querySelectorAll('#people .hand-flag').length === 2")
        mine = {ben: "Ben", cat: "Cat"}.get(page)
        assert await hand_order(page) == [f"1 Cat{' (you)' * (mine == 'Cat')}", f"2 Ben{' (you)' * (mine == 'Ben')}"]
    cat_tile = await ann.wait_for_selector(".tile.hand-up:has-text('Cat')")
    assert await cat_tile.eval_on_selector(".hand-flag", "el => el.title") == "Hand raised (1st)"
    # Ben reacts: a thumbs up rises over his tile on the others' pages, and is said in words.
    for page in (ann, ben, cat):
        await page.evaluate(LOG_REACTIONS)
    await ben.click("#react")
    assert await ben.get_attribute("#react", "aria-expanded") == "true"
    await ben.click(f"#reactions button[aria-label='React: thumbs up']")
    assert await ben.is_hidden("#reactions")
    for page in (ann, cat):
        assert await reactions_shown(page, 1) == [["Ben", THUMBS_UP]]
        assert await page.evaluate("() => window.__said") == ["Ben: thumbs up"]
    assert await reactions_shown(ben, 1) == [["Ben (you)", THUMBS_UP]]  # and on his own tile
    assert await ben.evaluate("() => window.__said") == ["You: thumbs up"]
    # With hands up (and maybe the reaction still showing), nothing overlaps at either size.
    await check_sizes([ann, ben], "hands up")
    await check_people(ann, "hands up")

    # The host lowers Cat's hand: Cat is told, and Ben moves up to first.
    await open_people(ann)
    await ann.click("#people li:has-text('Cat') button:has-text('Lower hand')")
    await cat.wait_for_selector(".toast:has-text('Ann lowered your hand')")
    assert await cat.get_attribute("#hand", "aria-pressed") == "false"
    for page in (ann, ben, cat):
        await page.wait_for_function("() => document.querySelectorAll('#people .hand-flag').length === 1")
    assert await hand_order(ann) == ["1 Ben"]
    assert await ann.eval_on_selector_all(".tile.hand-up", "els => els.length") == 1
    # Guests have no "Lower hand" for others.
    assert await cat.eval_on_selector_all("#people button:has-text('Lower hand')", "els => els.length") == 0

    # On a phone the picker opens above the toolbar, within the screen.
    await cat.set_viewport_size(PHONE)
    await settled(cat)
    await cat.click("#react")
    assert await inside_viewport(cat, "#reactions")
    if SHOTS:
        await cat.screenshot(path=f"{SHOTS}/reactions-open-phone-Cat.png")
    await cat.keyboard.press("Escape")
    assert await cat.is_hidden("#reactions")
    assert await cat.evaluate("document.activeElement.id") == "react"
    await cat.set_viewport_size(DESKTOP)


async def test_mute_all_ask_to_mute_answered_and_the_host_role_handed_over(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    hana, gus, ida = await new_page(browser), await new_page(browser), await new_page(browser)
    await join_meeting(hana, local(client, minted.host_url), "Hana")
    await join_meeting(gus, local(client, minted.url), "Gus")
    await join_meeting(ida, local(client, minted.url), "Ida")
    await hana.wait_for_selector("#people li:has-text('Ida') button:has-text('Make host')")

    # Mute all: each page mutes itself and says who did; they can unmute.
    await more(hana, "Mute all")
    # Notices last a few seconds: both pages are watched at once.
    await asyncio.gather(*(page.wait_for_selector(".toast:has-text('Hana muted everyone')") for page in (gus, ida)))
    for page in (gus, ida):
        assert await page.get_attribute("#mute", "aria-pressed") == "false"
    assert await hana.get_attribute("#mute", "aria-pressed") == "true"
    await hana.wait_for_selector("#people li:has-text('Gus') .state:has-text('mic off')")
    await gus.click("#mute")
    assert await gus.get_attribute("#mute", "aria-pressed") == "true"
    await hana.wait_for_selector("#people li:has-text('Gus') .state:has-text('mic on')")

    # Ask to mute, declined: Gus stays unmuted and Hana reads his answer.
    await hana.click("#people li:has-text('Gus') button:has-text('Ask to mute')")
    assert await hana.is_disabled("#people li:has-text('Gus') button:has-text('Asked to mute')")
    prompt = await gus.wait_for_selector(".toast.prompt:has-text('Hana asks you to mute')")
    await prompt.eval_on_selector("button:has-text('Stay unmuted')", "b => b.click()")
    await hana.wait_for_selector(".toast:has-text('Gus chose to stay unmuted')")
    assert await gus.get_attribute("#mute", "aria-pressed") == "true"
    # Asked again, accepted.
    await hana.click("#people li:has-text('Gus') button:has-text('Ask to mute')")
    prompt = await gus.wait_for_selector(".toast.prompt:has-text('Hana asks you to mute')")
    await prompt.eval_on_selector("button:has-text('Mute')", "b => b.click()")
    await hana.wait_for_selector(".toast:has-text('Gus muted their microphone')")
    assert await gus.get_attribute("#mute", "aria-pressed") == "false"

    # Someone knocks on the locked meeting (a page-less guest: a socket is enough to wait).
    await more(hana, "Lock meeting")
    await gus.wait_for_selector("#locked-badge:not([hidden])")
    newcomer = await connect(client, minted.meeting.id)
    await newcomer.send({"type": "join", "name": "Nia"})
    await newcomer.next("waiting")
    await hana.wait_for_selector("#lobby li:has-text('Nia')")
    await check_sizes([hana], "host with lobby")

    # Hana hands the host role to Gus: he gets the host's controls and the lobby; she loses them.
    hana.on("dialog", lambda dialog: dialog.accept())
    await open_people(hana)
    await hana.click("#people li:has-text('Gus') button:has-text('Make host')")
    await gus.wait_for_selector(".toast:has-text('Hana made you the host')")
    await gus.wait_for_selector("#lobby li:has-text('Nia')")
    assert await gus.get_attribute("#more-menu .host-only", "hidden") is None
    await hana.wait_for_function("() => document.querySelector('#more-menu .host-only').hidden")
    assert await hana.is_hidden("#lobby-panel")
    assert await hana.evaluate("() => Object.keys(sessionStorage).length") == 0  # the host key is gone
    for page in (hana, ida):
        await page.wait_for_selector("#people li:has-text('Gus') .tag:has-text('host')", state="attached")
    await check_sizes([gus, hana], "handed over")
    await check_people(gus, "handed over")
    assert await gus.eval_on_selector_all("#people li:has-text('Hana') button", "els => els.map(b => b.textContent)") == [
        "Ask to mute", "Make host", "Remove"]

    # Gus's connection drops: his page comes back by itself, still the host.
    session = client.server.app[SESSIONS].session(minted.meeting.id)
    [gus_conn] = [c for c in session.conns.values() if c.participant and c.participant.name == "Gus"]
    await gus_conn.channel.ws.close()
    room = room_of(client, minted.meeting.id)
    await wait_for(lambda: any(p.name == "Gus" and p.is_host and p.id != gus_conn.participant.id
                               for p in room.participants.values()), timeout=10)
    await gus.wait_for_selector("#lobby li:has-text('Nia')")
    await gus.click("#lobby li:has-text('Nia') button:has-text('Admit')")
    await newcomer.next("welcome")
    await newcomer.ws.close()


async def test_a_lobby_without_a_host_and_the_status_before_joining(
    browser: Browser, client: TestClient, minted: MintedMeeting
) -> None:
    nia = await new_page(browser)
    await nia.goto(local(client, minted.url))
    await nia.wait_for_selector("#join-status li:has-text('No host is in the meeting yet')")
    assert await nia.is_hidden("#recording-notice")

    hana, gus = await new_page(browser), await new_page(browser)
    await join_meeting(hana, local(client, minted.host_url), "Hana")
    # Nia, still on the pre-join screen, is told as things change.
    await nia.wait_for_selector("#join-status li:has-text('A host is in the meeting')")
    await join_meeting(gus, local(client, minted.url), "Gus")
    await hana.click("#record")
    await nia.wait_for_selector("#recording-notice:not([hidden])")
    await more(hana, "Lock meeting")
    await nia.wait_for_selector("#join-status li:has-text('The meeting is locked: a host will let you in')")
    await hana.click("#record")  # stopped again
    await nia.wait_for_selector("#recording-notice", state="hidden")

    # The host leaves: Nia reads that nobody can let her in, before joining and while waiting.
    await hana.click("#leave")
    await nia.wait_for_selector("#join-status li:has-text('no host is in it')")
    if SHOTS:
        for size, label in ((PHONE, "phone"), (DESKTOP, "desktop")):
            await nia.set_viewport_size(size)
            await nia.screenshot(path=f"{SHOTS}/prejoin-locked-no-host-{label}-Nia.png", full_page=True)
    await nia.fill("#name", "Nia")
    await nia.click("#join")
    await nia.wait_for_selector("#waiting:not([hidden])")
    assert "no host" in await nia.text_content("#waiting-message")
    await nia.wait_for_selector("#waiting #join-status li:has-text('Keep this page open')")
    # Said once: the lobby's message says no host is here, the status line only what to do.
    assert "Nobody can let you in" not in await nia.text_content("#waiting")
    # The people inside see that someone knocks in vain.
    banner = await gus.wait_for_selector("#knocking:not([hidden])")
    assert "Someone is waiting to join, and no host is here" in await banner.text_content()
    assert await gus.eval_on_selector_all("#lobby li", "els => els.length") == 0  # no names for guests
    await check_sizes([gus], "knocking")
    for size, label in ((PHONE, "phone"), (DESKTOP, "desktop")):
        await nia.set_viewport_size(size)
        await settled(nia)
        assert await nia.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert await inside_viewport(nia, "#cancel-wait") or await nia.evaluate(
            "document.documentElement.scrollHeight > window.innerHeight")  # reachable by scrolling
        if SHOTS:
            await nia.screenshot(path=f"{SHOTS}/lobby-without-host-{label}-Nia.png", full_page=True)

    # A host comes back: Nia is told a host is here, the banner goes, and she is let in.
    await hana.click("#rejoin")
    await hana.click("#join")
    await nia.wait_for_selector("#waiting #join-status li:has-text('A host is in the meeting')")
    await gus.wait_for_selector("#knocking", state="hidden")
    await hana.click("#lobby li:has-text('Nia') button:has-text('Admit')")
    await nia.wait_for_selector("#room:not([hidden])")
