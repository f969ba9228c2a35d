"""Hostile clients against a real ``meetnow serve``, while two people meet in Chromium.

Everything goes through the public interfaces (websockets and HTTP) from several loopback
addresses, which the server sees as different clients. Before, during and after each flood
the two browsers must keep decoding each other's video; the server's log must hold no
traceback. Floods are bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable

import aiohttp
import pytest
from playwright.async_api import Browser, Page, WebSocket

from tests.conftest import wait_for
from tests.web.hostile import Client, Clients, MeetnowProcess, address, clients, host_key
from tests.web.test_browser_meeting import join_meeting, remote_media

pytestmark = pytest.mark.browser

# Short deadlines so squatters and idle sockets are seen to go within the test (long enough for
# a real browser on a busy two-core machine).
JOIN_DEADLINE = 3
MEDIA_DEADLINE = 10
CAPACITY = 4  # people per meeting: squatters need few sockets to reach it


@dataclass
class Live:
    """A server, a meeting in it, and two Chromium participants meeting there (Hana hosts)."""

    server: MeetnowProcess
    http: aiohttp.ClientSession
    sockets: Clients
    meeting: dict[str, Any]
    host: Page
    guest: Page
    browser: Browser
    host_frames: list[str] = field(default_factory=list)  # what the host page's socket received
    welcomes: dict[str, int] = field(default_factory=dict)  # page name -> welcomes (joins) seen

    def rejoins(self) -> dict[str, int]:
        """How often each page had to join again (its connection was closed under it)."""
        return {name: count - 1 for name, count in self.welcomes.items()}

    @property
    def ws_url(self) -> str:
        return self.server.socket_url(self.meeting["id"])

    async def media_flows(self) -> None:
        """Each browser decodes more of the other's video (and hears it)."""
        await asyncio.gather(frames_keep_rising(self.host, 1), frames_keep_rising(self.guest, 1))

    async def through(self, flood: Awaitable[Any]) -> Any:
        """Run a flood, checking the meeting's media before, during and after it."""
        await self.media_flows()
        result, _ = await asyncio.gather(flood, self.media_flows())
        await self.media_flows()
        return result

    def assert_clean_log(self) -> None:
        log = self.server.log()
        assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


async def frames_keep_rising(page: Page, count: int, frames: int = 5, timeout: float = 20.0) -> None:
    """The page decodes ``frames`` more video frames from each of ``count`` others, and hears them.

    Counted per remote participant; when the set of them changes (someone's page reconnected
    on a busy machine) counting starts again, so what is asserted is media flowing now.
    """
    start: dict[str, dict[str, float]] = {}

    async def rising() -> bool:
        nonlocal start
        media = await remote_media(page)
        if set(media) != set(start):
            start = media
            return False
        return len(media) >= count and all(
            media[p]["frames"] >= start[p]["frames"] + frames and media[p]["energy"] > 0 for p in media)

    await wait_for(rising, timeout=timeout, interval=0.1)


@contextlib.asynccontextmanager
async def live_meeting(tmp_path: Path, browser: Browser, workers: int = 1, **media: object) -> AsyncIterator[Live]:
    settings = {"max_participants": CAPACITY, "join_deadline": JOIN_DEADLINE, "media_deadline": MEDIA_DEADLINE,
                **media}
    server = MeetnowProcess(tmp_path, workers=workers, **settings)
    async with aiohttp.ClientSession() as http, clients() as sockets:
        await server.start(http)
        pages: list[Page] = []
        try:
            meeting = await server.mint(http, "Under attack")
            for _ in range(2):
                context = await browser.new_context()
                pages.append(await context.new_page())
            live = Live(server, http, sockets, meeting, pages[0], pages[1], browser)

            def watch(name: str) -> Any:
                def on_socket(ws: WebSocket) -> None:
                    def on_frame(payload: str | bytes) -> None:
                        text = payload if isinstance(payload, str) else payload.decode()
                        if name == "Hana":
                            live.host_frames.append(text)
                        if text.startswith('{"type": "welcome"'):
                            live.welcomes[name] = live.welcomes.get(name, 0) + 1
                    ws.on("framereceived", on_frame)
                return on_socket

            live.host.on("websocket", watch("Hana"))
            live.guest.on("websocket", watch("Gus"))
            await join_meeting(live.host, meeting["host_url"], "Hana")
            await join_meeting(live.guest, meeting["url"], "Gus")
            try:
                yield live
            except BaseException:
                lines = [line for line in server.log().splitlines() if "aiohttp.access" not in line]
                print("server log (last lines):", *lines[-40:], sep="\n")
                raise
            finally:
                print(f"pages that had to join again: {live.rejoins()}")
            live.assert_clean_log()
        finally:
            for page in pages:
                await page.context.close()
            await server.stop()


async def knock(sockets: Clients, url: str, name: str, where: str = "127.0.0.1",
                **fields: Any) -> tuple[Client, str]:
    """Join a locked meeting: the client, and what it was told first (waiting, welcome, an error code)."""
    client = await sockets.join(url, name, where, **fields)
    first = await client.next("waiting", "welcome", "error")
    return client, first.get("code", first["type"])


async def lock(live: Live) -> Client:
    """A host's raw socket that locks the meeting (it stays, never connecting media)."""
    host = await live.sockets.join(live.ws_url, "Locker", host_key=host_key(live.meeting))
    await host.next("welcome")
    await host.send({"type": "lock", "locked": True})
    await host.next("locked")
    return host


async def test_resume_tokens_only_take_back_their_own_place(tmp_path: Path, browser: Browser) -> None:
    async with live_meeting(tmp_path, browser, media_deadline=30) as live:
        await live.media_flows()
        sockets = live.sockets
        other = await live.server.mint(live.http, "Elsewhere")
        elsewhere = await sockets.join(live.server.socket_url(other["id"]), "Mallory")
        foreign_token = (await elsewhere.next("welcome"))["resume"]
        await elsewhere.close()
        host = await lock(live)

        # A token from another meeting: the lobby, like anyone else.
        stranger, told = await knock(sockets, live.ws_url, "Mallory", resume=foreign_token)
        assert told == "waiting"
        await host.send({"type": "deny", "id": await host_lobby_id(host, "Mallory")})
        await stranger.next("denied")

        # Someone admitted, then removed by a host: their token leads back to the lobby.
        removed, told = await knock(sockets, live.ws_url, "Rex", "127.0.0.2")
        assert told == "waiting"
        await host.send({"type": "admit", "id": await host_lobby_id(host, "Rex")})
        welcome = await removed.next("welcome")
        await host.send({"type": "remove", "id": welcome["you"]["id"]})
        await removed.next("removed")
        await wait_for(lambda: removed.closed, 5)
        back, told = await knock(sockets, live.ws_url, "Rex", "127.0.0.2", resume=welcome["resume"])
        assert told == "waiting" and not back.closed  # in the lobby, not in the meeting
        await host_lobby_id(host, "Rex")

        # The control: an admitted person whose connection dropped takes their place back.
        dropped, told = await knock(sockets, live.ws_url, "Pia", "127.0.0.3")
        assert told == "waiting"
        await host.send({"type": "admit", "id": await host_lobby_id(host, "Pia")})
        token = (await dropped.next("welcome"))["resume"]
        await dropped.close()
        returning = await sockets.join(live.ws_url, "Pia", "127.0.0.3", resume=token)
        assert (await returning.next("welcome", "waiting"))["type"] == "welcome"
        await live.media_flows()


async def host_lobby_id(host: Client, name: str) -> str:
    """The lobby id the host was just told of for ``name``."""
    added = await host.next("lobby-added")
    assert added["waiting"]["name"] == name, added
    return str(added["waiting"]["id"])


async def test_squatters_do_not_keep_a_real_guest_out_and_are_dropped(tmp_path: Path, browser: Browser) -> None:
    async with live_meeting(tmp_path, browser) as live:
        async def squat() -> list[Client]:
            # Three addresses, four sockets each: join, take the offer, never answer it.
            squatters = await asyncio.gather(*(live.sockets.join(live.ws_url, f"Squat {n}", address(n % 3),
                                                                 publish=["mic", "camera"])
                                               for n in range(12)))
            for squatter in squatters:
                await squatter.next("offer", "error")
            return list(squatters)

        await live.media_flows()
        squatters = await squat()
        # A real person arriving now, while the squatters hold every place of people setting
        # up, still gets in (the oldest squatter makes way)...
        late_socket = await live.sockets.join(live.ws_url, "Lou", "127.0.0.5")
        assert (await late_socket.next("welcome", "error"))["type"] == "welcome"
        pending = [s for s in squatters if not s.closed]
        refused = sorted(e for s in squatters for e in s.errors())
        print(f"squatters: {len(pending)} still setting up when Lou got in; closed so far: {refused}")
        assert len(pending) >= CAPACITY
        await late_socket.close()
        await live.media_flows()  # with the squatters in the meeting
        # ... and so does one in a browser, who then sees and hears the others.
        late = await (await live.browser.new_context()).new_page()
        await join_meeting(late, live.meeting["url"], "Lea")
        await frames_keep_rising(late, 2, timeout=40)
        # The squatters that got in are dropped after the media deadline, told why.
        started = time.monotonic()
        await wait_for(lambda: all(s.closed for s in squatters), MEDIA_DEADLINE + 10)
        print(f"squatters all closed {time.monotonic() - started:.1f} s later")
        assert {e for s in squatters for e in s.errors()} <= {"media-timeout", "meeting-full"}
        assert any(e == "media-timeout" for s in squatters for e in s.errors())
        await live.media_flows()
        await frames_keep_rising(late, 2)
        await late.context.close()


async def test_a_thousand_ghosts_come_and_go_and_the_server_returns_to_its_footprint(
        tmp_path: Path, browser: Browser) -> None:
    async with live_meeting(tmp_path, browser) as live:
        others = [await live.server.mint(live.http, f"Ghost town {n}") for n in range(3)]
        urls = [live.ws_url] + [live.server.socket_url(m["id"]) for m in others]

        async def ghosts(first: int, count: int, parallel: int = 8) -> dict[str, int]:
            """``count`` sockets that join and vanish: half once welcomed (their media still being
            set up), half once they have their offer."""
            outcome: dict[str, int] = {}
            queue = iter(range(first, first + count))

            async def one_by_one() -> None:
                for n in queue:
                    ghost = await live.sockets.join(urls[n % len(urls)], f"Ghost {n}", address(n // 8),
                                                    publish=["mic", "camera"])
                    first_reply = await ghost.next("welcome" if n % 2 else "offer", "error")
                    kind = first_reply.get("code", first_reply["type"])
                    outcome[kind] = outcome.get(kind, 0) + 1
                    await ghost.close()
                    live.sockets.opened.remove(ghost)

            await asyncio.gather(*(one_by_one() for _ in range(parallel)))
            return outcome

        at_start = await settled_footprint(live)
        await ghosts(0, 100)  # warm-up: whatever the server loads or caches once
        await asyncio.sleep(0)
        await settled_footprint(live)
        before = live.server.footprint()
        started = time.monotonic()
        outcome = await live.through(ghosts(100, 1000))
        took = time.monotonic() - started
        during = live.server.footprint()
        after = await settled_footprint(live, before.fds)
        print(f"1000 ghosts in {took:.1f} s: {outcome}; at the start {at_start}, after 100 to warm up {before}, "
              f"at the end {during}, after {after}")
        assert outcome.get("offer", 0) + outcome.get("welcome", 0) >= 900, outcome
        assert after.fds <= min(before.fds, at_start.fds) + 4
        assert after.rss_kib <= before.rss_kib + 40 * 1024


async def settled_footprint(live: Live, fds: int | None = None, timeout: float = 15.0) -> Any:
    """The server's footprint once its open fds are down to ``fds`` or, without it, have not
    changed for three readings in a row (sockets just closed take a moment to go)."""
    readings = [live.server.footprint()]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        readings.append(live.server.footprint())
        if fds is not None and readings[-1].fds <= fds:
            break
        if fds is None and len({r.fds for r in readings[-3:]}) == 1 and len(readings) >= 3:
            break
    return readings[-1]


@pytest.mark.parametrize("workers", [1, 2])
async def test_malformed_json_gets_an_error_and_the_socket_stays_usable(
        tmp_path: Path, browser: Browser, workers: int) -> None:
    bad = {
        "a 5000-digit integer": '{"type": "candidate", "candidate": "x", "sdpMLineIndex": ' + "9" * 5000 + "}",
        "30,000 levels of nesting": "[" * 30000 + "]" * 30000,
        "nesting that never closes": '{"type": "ping", "x": ' + "[" * 30000,
        "a lone surrogate": '{"type": "join", "name": "\\ud800"}',
    }
    async with live_meeting(tmp_path, browser, workers) as live:
        async def attack() -> None:
            socket = await live.sockets.open(live.ws_url, "127.0.0.9")
            for what, text in bad.items():
                await socket.send(text)
                reply = await socket.next("error")
                assert reply["code"] in ("bad-json", "too-large"), (what, reply)
                assert "Traceback" not in reply["message"], reply
                await socket.send({"type": "ping"})
                await socket.next("pong")
            await socket.send({"type": "join", "name": "Still here"})
            await socket.next("welcome")
            await socket.send({"type": "leave"})

        await live.through(attack())
        # The HTTP API refuses the same text with a 400 and a reason.
        for what, text in bad.items():
            async with live.http.post(f"{live.server.url}/api/meetings", data=text.encode(),
                                      headers={"Content-Type": "application/json"},
                                      ) as response:
                body = await response.text()
                assert response.status == 400, (what, response.status, body[:300])
                assert "Traceback" not in body


async def test_a_knock_flood_costs_the_host_little_and_the_lobby_stays_bounded(
        tmp_path: Path, browser: Browser) -> None:
    async with live_meeting(tmp_path, browser, max_waiting=10, media_deadline=60) as live:
        locker = await lock(live)
        await wait_for(lambda: any('"locked"' in f for f in live.host_frames), 5)
        start_bytes = sum(len(f.encode()) for f in live.host_frames)

        async def from_one_address(count: int = 1000, parallel: int = 50) -> dict[str, int]:
            outcome: dict[str, int] = {}
            queue = iter(range(count))

            async def one_by_one() -> None:
                for n in queue:
                    _, kind = await knock(live.sockets, live.ws_url, f"Knock {n}", "127.0.0.7")
                    outcome[kind] = outcome.get(kind, 0) + 1

            await asyncio.wait_for(asyncio.gather(*(one_by_one() for _ in range(parallel))), 60)
            return outcome

        started = time.monotonic()
        from_one = await live.through(from_one_address())
        took = time.monotonic() - started
        # Then knocks from many addresses, past the lobby's size.
        many = await asyncio.gather(*(knock(live.sockets, live.ws_url, f"Crowd {n}", address(n))
                                      for n in range(30)))
        waiting = [c for c in live.sockets.opened if c.kinds()[:1] == ["waiting"] and not c.closed]
        # The page reports frames a little after they arrive.
        await wait_for(lambda: sum(1 for f in live.host_frames if '"lobby-added"' in f) >= len(waiting), 10)
        host_bytes = sum(len(f.encode()) for f in live.host_frames) - start_bytes
        lobby_messages = sum(1 for f in live.host_frames if '"lobby' in f)
        print(f"1000 knocks from one address in {took:.1f} s: {from_one}; 30 from others: "
              f"{ {told: sum(1 for _, t in many if t == told) for _, told in many} }; "
              f"{len(waiting)} waiting; the host received {host_bytes} bytes, {lobby_messages} lobby messages")
        assert len(waiting) == 10  # the lobby's cap
        # One address: a few sockets (10 at once, then one each 2 s), fewer knocks (3, then one each 5 s).
        assert sum(v for k, v in from_one.items() if k != "rate-limited") <= 10 + took / 2 + 1
        assert from_one.get("waiting", 0) <= 3 + took / 5 + 1
        assert host_bytes < 20_000
        await live.media_flows()
        await locker.close()


async def test_idle_sockets_are_closed_at_the_join_deadline(tmp_path: Path, browser: Browser) -> None:
    async with live_meeting(tmp_path, browser) as live:
        async def idle() -> list[Client]:
            return list(await asyncio.gather(*(live.sockets.open(live.ws_url, address(n % 10)) for n in range(50))))

        sockets = await live.through(idle())
        opened = time.monotonic()
        await wait_for(lambda: all(s.closed for s in sockets), JOIN_DEADLINE + 5)
        print(f"50 idle sockets closed {time.monotonic() - opened:.1f} s after opening")
        assert {tuple(s.errors()) for s in sockets} == {("join-timeout",)}
        await live.media_flows()
