"""Thousands of random and malformed signaling messages against a meeting in progress."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.async_api import Browser

from tests.conftest import room_of, wait_for
from tests.web.test_browser_meeting import frames_keep_rising, join_meeting, meeting_url  # noqa: F401
from web.keys import SESSIONS, SOCKET_LIMITS
from meeting.ratelimit import KeyedLimiter, LocalLimiter
from meeting.session.messages import MUTE_ANSWERS, REACTIONS, SCHEMA

pytestmark = pytest.mark.browser

TYPES = sorted(SCHEMA) + ["", "offer", "JOIN", "welcome"]
FIELDS = sorted({f for fields in SCHEMA.values() for f in fields}) + ["type", "x", "__proto__"]
# Values some messages accept (reactions, answers, a key check), so fuzzed ones get past the schema.
ACCEPTED = st.sampled_from(list(REACTIONS) + list(MUTE_ANSWERS) + ["0123456789abcdef", "screen", "mic"])
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40)
           | ACCEPTED)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                      max_leaves=8)


def mutate(text: str, rng: random.Random) -> str:
    """A session description or candidate with lines dropped, repeated, cut or garbled."""
    lines = text.split("\r\n")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        action = rng.choice(["drop", "dup", "cut", "garble", "swap"])
        if action == "drop":
            lines.pop(i)
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "cut":
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        elif action == "garble" and lines[i]:
            j = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:j] + chr(rng.randrange(32, 0x3000)) + lines[i][j + 1:]
        elif action == "swap":
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            lines = [""]
    return "\r\n".join(lines)


@st.composite
def messages(draw: st.DrawFn, seeds: dict[str, str]) -> str:
    kind = draw(st.sampled_from(["raw", "object", "typed", "answer", "candidate"]))
    if kind == "raw":
        return draw(st.text(max_size=200))
    if kind == "object":
        return json.dumps(draw(st.dictionaries(st.sampled_from(FIELDS), values, max_size=5)), default=str)
    if kind == "typed":
        body: dict[str, Any] = {"type": draw(st.sampled_from(TYPES))}
        body.update(draw(st.dictionaries(st.sampled_from(FIELDS), values, max_size=4)))
        return json.dumps(body)
    rng = draw(st.randoms(use_true_random=False))
    if kind == "answer":
        return json.dumps({"type": "answer", "sdp": mutate(seeds["sdp"], rng)})
    return json.dumps({"type": "candidate", "candidate": mutate(seeds["candidate"], rng),
                       "sdpMid": draw(st.none() | st.text(max_size=3)),
                       "sdpMLineIndex": draw(st.none() | st.integers(-5, 50))})


# Hypothesis warns when the global `random` changes while it draws an example; here the
# server, serving the meeting on the main thread meanwhile, draws from it (aiortc's and
# aioice's ids, sequence numbers). The strategies draw only from `st.randoms()`.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
async def test_fuzzed_signaling_never_crashes_or_disturbs_a_meeting(
    browser: Browser, meeting_url: str, client: TestClient  # noqa: F811
) -> None:
    pages = []
    for name in ("Ann", "Ben"):
        page = await (await browser.new_context()).new_page()
        await join_meeting(page, meeting_url, name)
        pages.append(page)
    for page in pages:
        await frames_keep_rising(page, 1, timeout=15)
    seeds = {
        "sdp": await pages[0].evaluate("() => window.meetnow.pc.localDescription.sdp"),
        "candidate": "candidate:842163049 1 udp 1677729535 127.0.0.1 52000 typ srflx raddr 0.0.0.0 rport 0",
    }
    # Let the fuzz through to the parser: the limits have tests of their own.
    limits = client.server.app[SOCKET_LIMITS]
    limits.rate_per_second = limits.rate_burst = 10_000.0
    limits.connects = LocalLimiter(10_000.0, 10_000.0)
    limits.messages = KeyedLimiter(10_000.0, 10_000.0)
    ws_url = meeting_url.replace("http://", "ws://") + "/ws"
    codes: dict[str, int] = {}
    sent = 0

    async def run_batch(join_first: bool, batch: list[str]) -> None:
        nonlocal sent
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
            if join_first:
                await ws.send_json({"type": "join", "name": "fuzz", "publish": []})
            for raw in batch:
                await ws.send_str(raw)
            sent += len(batch)
            await ws.send_json({"type": "ping"})
            async for frame in ws:  # read until the pong: every message before it was handled
                message = json.loads(frame.data)
                if message["type"] == "error":
                    codes[message["code"]] = codes.get(message["code"], 0) + 1
                if message["type"] == "pong":
                    break

    loop = asyncio.get_running_loop()

    # Hypothesis drives examples synchronously: it runs in a worker thread and hands each
    # batch to the server's event loop, which keeps serving the meeting meanwhile.
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(join_first=st.booleans(), batch=st.lists(messages(seeds), min_size=25, max_size=60))
    def fuzz(join_first: bool, batch: list[str]) -> None:
        asyncio.run_coroutine_threadsafe(run_batch(join_first, batch), loop).result(timeout=60)

    await asyncio.to_thread(fuzz)
    print(f"{sent} fuzzed messages; errors by code: {codes}")
    assert sent >= 2000
    assert "internal" not in codes  # every refusal was a deliberate one
    assert {"bad-json", "bad-message", "unknown-type"} <= set(codes)
    # Every fuzzing participant is gone from the room and from the media plane.
    room = room_of(client, meeting_url.rsplit("/", 1)[1])
    await wait_for(lambda: len(room.participants) == 2, timeout=10)
    sfu = client.server.app[SESSIONS].context.sfu
    await wait_for(lambda: sfu.stats()["totals"]["participants"] == 2, timeout=10)
    for page in pages:
        await frames_keep_rising(page, 1, timeout=10)
