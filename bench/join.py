"""Join time: page load to first remote video frame for a second joiner, in Chromium.

``meetnow serve`` runs as a subprocess with a temporary configuration (store and
recordings in a temporary folder, media announced on 127.0.0.1). One Chromium page joins
a meeting and stays, publishing the browser's fake camera and microphone; then a second
joiner, in a fresh browser context each time, opens the meeting link and joins at once (a
name typed and Join pressed at DOMContentLoaded, from a script in the page, so no
automation round trip is counted), and the time from navigation start to the first
remote video frame it presents (requestVideoFrameCallback on the incoming track) is
measured in the page. That is repeated ``--joins`` times (10 by default); the second
joiner leaves between joins.

Also reported per join, all from navigation start: the page parsed (DOMContentLoaded),
the Join click, the peer connection
created (the page waits for its camera and microphone first), ICE+DTLS connected, and
the first frame decoded as getStats reports it (polled every 10 ms).

Chromium is Debian's (launched with bench/chromium.py's settings; never downloaded). The script
re-runs itself in a private network namespace with only loopback when it can (root), so
the browser cannot reach anything else. ``--quick`` does two joins (for the test suite).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import netns  # noqa: E402
from bench.harness import results  # noqa: E402
from bench.harness.processes import end, free_port, wait_for_http  # noqa: E402
from bench.harness.serve import meetnow_command  # noqa: E402

# Installed before the page's own scripts: timestamps (performance.now(), ms since
# navigation start) of the Join click, the peer connection, its connection, and the
# first remote video frame.
TIMING_SCRIPT = """
(() => {
  const mark = {};
  window.__joinTiming = mark;
  const now = () => performance.now();
  document.addEventListener("submit", () => { if (mark.click === undefined) mark.click = now(); }, true);
  // Join the moment the page can take it: a name typed and Join pressed at DOMContentLoaded
  // (the page itself then waits for its camera and microphone), with no automation delay.
  document.addEventListener("DOMContentLoaded", () => {
    const input = document.getElementById("name"), form = document.getElementById("join-form");
    if (!input || !form) return;
    input.value = "Second";
    form.requestSubmit();
  });
  const Native = window.RTCPeerConnection;
  if (!Native) return;
  function Timed(...args) {
    const pc = new Native(...args);
    if (mark.pc === undefined) mark.pc = now();
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "connected" && mark.connected === undefined) mark.connected = now();
    });
    pc.addEventListener("track", (event) => {
      if (event.track.kind !== "video") return;
      const video = document.createElement("video");
      video.muted = true;
      video.playsInline = true;
      video.style.cssText = "position:fixed;right:0;bottom:0;width:64px;height:48px;z-index:9999";
      video.srcObject = new MediaStream([event.track]);
      document.documentElement.appendChild(video);
      video.requestVideoFrameCallback(() => { if (mark.firstFrame === undefined) mark.firstFrame = now(); });
      video.play().catch(() => {});
    });
    const poll = setInterval(async () => {
      if (mark.firstDecoded !== undefined || pc.connectionState === "closed") return clearInterval(poll);
      const stats = await pc.getStats();
      stats.forEach((r) => {
        if (r.type === "inbound-rtp" && r.kind === "video" && r.framesDecoded > 0 && mark.firstDecoded === undefined) {
          mark.firstDecoded = now();
        }
      });
    }, 10);
    return pc;
  }
  Timed.prototype = Native.prototype;
  Object.setPrototypeOf(Timed, Native);
  window.RTCPeerConnection = Timed;
})();
"""

STEPS = ("domContentLoaded", "click", "pc", "connected", "firstDecoded", "firstFrame")

NAVIGATION = """() => { const n = performance.getEntriesByType("navigation")[0];
  return n ? {domContentLoaded: n.domContentLoadedEventEnd} : {}; }"""


class MeetnowServer:
    """``meetnow serve`` with a temporary configuration; media on ``address`` only."""

    def __init__(self, address: str = "127.0.0.1", peers: str = "127.0.0.0/8", title: str = "Join benchmark") -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="meetnow-bench-"))
        self.address = address
        self.peers = peers  # the network browsers' candidates must be in
        self.title = title
        self.port = free_port(address)
        self.origin = f"http://{address}:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = self.folder / "meetnow.log"

    async def start(self, timeout: float = 20.0) -> None:
        config = self.folder / "meetnow.toml"
        config.write_text(
            f'[server]\nhost = "{self.address}"\nport = {self.port}\npublic_url = "{self.origin}"\n\n'
            f'[store]\npath = "{self.folder / "meetnow.sqlite3"}"\n\n'
            f'[recordings]\nfolder = "{self.folder / "recordings"}"\n\n'
            f'[media]\nannounce_addresses = ["{self.address}"]\nallowed_peer_networks = ["{self.peers}"]\n'
        )
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(meetnow_command() + ["serve", "--config", str(config)], cwd=str(ROOT),
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        await wait_for_http(self.origin + "/healthz", self.process, "meetnow serve", self.log, timeout)

    async def mint(self) -> str:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.post(self.origin + "/api/meetings", json={"title": self.title}) as response:
                response.raise_for_status()
                url = (await response.json())["url"]
        # The link is built from public_url; make sure the browser stays on our origin.
        return self.origin + url[url.index("/m/"):]

    def stop(self) -> None:
        if self.process is not None:
            end(self.process, signal.SIGTERM)
        shutil.rmtree(self.folder, ignore_errors=True)


async def join(page, url: str, name: str) -> None:
    await page.goto(url, wait_until="commit")
    await page.fill("#name", name)
    await page.click("#join")


async def one_join(browser, url: str, timeout: float) -> dict:
    context = await browser.new_context()
    try:
        await context.add_init_script(TIMING_SCRIPT)
        page = await context.new_page()
        await page.goto(url, wait_until="commit")
        deadline = time.monotonic() + timeout
        while True:
            timing = await page.evaluate("() => window.__joinTiming")
            if timing.get("firstFrame") is not None and timing.get("firstDecoded") is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no remote frame within {timeout} s (got {timing})")
            await asyncio.sleep(0.05)
        timing.update(await page.evaluate(NAVIGATION))
        return {step: timing.get(step) for step in STEPS}
    finally:
        await context.close()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 1)) - 1))]


async def bench(args: argparse.Namespace) -> dict:
    from playwright.async_api import async_playwright

    from bench.chromium import CHROMIUM, CHROMIUM_ARGS

    server = MeetnowServer()
    joins: list[dict] = []
    errors: list[str] = []
    try:
        await server.start()
        url = await server.mint()
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                host_context = await browser.new_context()
                host = await host_context.new_page()
                await join(host, url, "First")
                await host.wait_for_selector(".tile.self", timeout=20000)
                await asyncio.sleep(1.0)  # the first joiner publishing steadily
                for i in range(args.joins):
                    try:
                        timing = await one_join(browser, url, args.timeout)
                        joins.append(timing)
                        print(f"  join {i + 1}: first remote frame {timing['firstFrame']:.0f} ms after navigation "
                              f"(click at {timing['click']:.0f} ms)", file=sys.stderr, flush=True)
                    except Exception as exc:
                        errors.append(f"join {i + 1}: {type(exc).__name__}: {exc}")
                        print(f"  join {i + 1}: {errors[-1]}", file=sys.stderr, flush=True)
                    await asyncio.sleep(args.pause)  # the server sees the second joiner leave
                await host_context.close()
            finally:
                await browser.close()
    finally:
        await asyncio.to_thread(server.stop)  # waits for meetnow serve to end
    summary = {}
    for step in STEPS:
        values = [j[step] for j in joins if j.get(step) is not None]
        if values:
            summary[step] = {"median_ms": statistics.median(values), "p90_ms": percentile(values, 0.9),
                             "min_ms": min(values), "max_ms": max(values)}
    click_to_frame = [j["firstFrame"] - j["click"] for j in joins if j.get("click") is not None]
    if click_to_frame:
        summary["click_to_first_frame"] = {"median_ms": statistics.median(click_to_frame),
                                           "p90_ms": percentile(click_to_frame, 0.9),
                                           "min_ms": min(click_to_frame), "max_ms": max(click_to_frame)}
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": results.machine(),
        "network": netns.describe("127.0.0.1"),
        "browser": CHROMIUM,
        "server": "meetnow serve (subprocess), media announced on 127.0.0.1",
        "what": "navigation start of the second joiner's page -> first remote video frame presented "
                "(Join clicked as soon as the page allows)",
        "joins_asked": args.joins,
        "joins": joins,
        "summary": summary,
        "errors": errors,
    }


def table(result: dict) -> str:
    names = {"domContentLoaded": "page parsed (DOMContentLoaded)", "click": "Join clicked", "pc": "peer connection created", "connected": "connected (ICE+DTLS)",
             "firstDecoded": "first frame decoded (getStats)", "firstFrame": "first frame presented",
             "click_to_first_frame": "Join click -> first frame presented"}
    lines = [f"{len(result['joins'])} joins, ms from navigation start of the second joiner's page:",
             "| step | median | p90 | min | max |", "|---|---|---|---|---|"]
    for step, label in names.items():
        s = result["summary"].get(step)
        if s:
            lines.append(f"| {label} | {s['median_ms']:.0f} | {s['p90_ms']:.0f} | {s['min_ms']:.0f} | {s['max_ms']:.0f} |")
    for error in result["errors"]:
        lines.append(f"error: {error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two joins (a few seconds)")
    parser.add_argument("--joins", type=int, default=10, help="number of second joins measured")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between joins")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds a join may take before it fails")
    parser.add_argument("--no-netns", action="store_true", help="do not enter a private network namespace")
    parser.add_argument("--output", type=Path, default=results.RESULTS / "join.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.joins, args.pause = 2, 0.5
    netns.enter_if_possible(veth=False, skip=args.no_netns, fallback="running on loopback without a namespace")
    started = time.monotonic()
    result = asyncio.run(bench(args))
    results.report(result, args.output, table(result), started)
    return 1 if result["errors"] or not result["joins"] else 0


if __name__ == "__main__":
    sys.exit(main())
