"""A browser that can reach a TURN server but none of the server's media addresses still
meets: its media goes through Debian's coturn, with a credential minted for its page.

Layout (all inside the test's private namespace):

    browser netns  10.231.7.2 --veth-- 10.231.7.1  test netns: meetnow's HTTP, coturn
                                        127.0.0.1  meetnow's media, coturn's relay ports

The browser's namespace has no route to 127.0.0.1 of the test's, so the only way its
media reaches the server is coturn relaying it from 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import async_playwright

from meeting.config import Config, TurnConfig
from meeting.models import Origin
from meeting.store.sqlite import SqliteStore
from bench.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import wait_for
from tests.coturn import Coturn, coturn
from tests.netspace import Netns, isolated
from tests.web.synthetic_guest import SyntheticGuest
from web.server import build_server

pytestmark = pytest.mark.browser

# Where the page's ICE ended up, and what it receives.
SELECTED = """
async () => {
  const pc = window.meetnow.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null, frames = 0, energy = 0;
  stats.forEach((r) => {
    if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
    if (r.type === "inbound-rtp" && r.kind === "audio") energy += r.totalAudioEnergy || 0;
  });
  if (!pair || pair.state !== "succeeded") return {frames, energy};
  const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
  return {frames, energy, local: local.candidateType, protocol: local.relayProtocol || null,
          localAddress: local.address, remote: remote.candidateType, remoteAddress: remote.address};
}
"""


@pytest.fixture
async def netns() -> AsyncIterator[Netns]:
    if not isolated():
        pytest.skip("needs the private network namespace that tests/netns.sh gives root")
    space = await Netns.create()
    try:
        yield space
    finally:
        await space.close()


def _port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_browser_behind_a_strict_firewall_meets_through_the_relay(
        tmp_path: Path, config: Config, store: SqliteStore, netns: Netns, transport: str) -> None:
    async with coturn(tmp_path / "coturn", host=netns.host_address, relay_ip="127.0.0.1") as turn:
        configured = dataclasses.replace(config, turn=TurnConfig(urls=(turn.url(transport),),
                                                                 secret=turn.secret, ttl=3600))
        server = build_server(configured, store)
        port = _port(netns.host_address)
        origin = f"http://{netns.host_address}:{port}"
        async with TestClient(TestServer(server.app, host=netns.host_address, port=port)) as client:
            minted = await server.meetings.mint("Relay", Origin("web"))
            guest = await SyntheticGuest.join(client, minted.meeting.id, "Synthetic")
            try:
                await _meet_in_browser(tmp_path, netns, turn, origin, minted.url.split("/m/", 1)[1], server,
                                       transport)
            finally:
                await guest.close()
        await server.stop_background()
    # coturn made allocations with the minted, expiring usernames, and relayed for them.
    log = turn.log.read_text()
    assert "ALLOCATE processed, success" in log and "CREATE_PERMISSION processed, success" in log


async def _meet_in_browser(tmp_path: Path, netns: Netns, turn: Coturn, origin: str, meeting_path: str,
                           server: Any, transport: str) -> None:
    args = [a for a in CHROMIUM_ARGS if a != "--allow-loopback-in-peer-connection"
            and not a.startswith("--host-resolver-rules")]
    args += [f"--unsafely-treat-insecure-origin-as-secure={origin}",
             f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {netns.host_address}"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(netns.wrapper(CHROMIUM, tmp_path)), headless=True, args=args)
        try:
            page = await browser.new_page()
            await page.goto(f"{origin}/m/{meeting_path}")
            await page.fill("#name", "Behind a firewall")
            await page.click("button:has-text('Join')")
            await page.wait_for_selector(".tile.self")

            async def relayed_media() -> bool:
                seen = await page.evaluate(SELECTED)
                return bool(seen and seen.get("local") and seen["frames"] > 10 and seen["energy"] > 0)
            await wait_for(relayed_media, timeout=30, interval=0.25)
            seen = await page.evaluate(SELECTED)
            # The browser's end of the pair is its relay on coturn, reached over the transport
            # it was given; the far end is the server on loopback (or the server's own relay).
            assert seen["local"] == "relay" and seen["protocol"] == transport, seen
            assert seen["localAddress"] == "127.0.0.1" and seen["remoteAddress"] == "127.0.0.1", seen

            # And the server receives the browser's own media, which can only come through the relay.
            def browser_publishing() -> bool:
                [session] = server.sessions.all()
                [pid] = [p.id for p in session.room.participants.values() if p.name == "Behind a firewall"]
                room = server.sfu.stats(detail=True)["rooms"][session.id]
                return sum(c["packets_received"] for key, c in room["detail"].items()
                           if key.startswith(f"{pid}/")) > 100
            await wait_for(browser_publishing, timeout=15)
        finally:
            await browser.close()
