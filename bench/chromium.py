"""Debian's chromium driven by playwright: fake camera and microphone, loopback only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import AsyncIterator

from playwright.async_api import Browser, async_playwright

# /usr/bin/chromium is a shell wrapper; the real binary avoids its extra flags and noise.
CHROMIUM = os.environ.get("MEETNOW_CHROMIUM") or next(
    (p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()),
    "/usr/bin/chromium",
)

CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    # Two fake cameras (and the default three microphones), so device pickers can be tried.
    "--use-fake-device-for-media-stream=device-count=2",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--no-first-run",
    "--no-pings",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


async def launch_chromium() -> AsyncIterator[Browser]:
    """Yield a headless chromium; closes it and the playwright driver afterwards."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()
