"""The weak-viewer scenario: four people in Chromium, one of them on a poor link.

Four Chromium participants, each on a network namespace and link of its own
(``bench/netlab.py``), all publishing camera and microphone to ``meetnow serve``. After a
baseline with every link unshaped, the fourth participant's downlink is limited (500 kbit/s
``tbf``, 2% random UDP loss by default); the scenario then measures, from each browser's
WebRTC statistics:

- what each viewer receives of each publisher: bitrate, frame size, frames per second
  decoded, freezes (``totalFreezesDuration``), audio energy; and what each publisher sends;
- with the link limited, after ``--settle`` seconds, over a ``--window``;
- how long it takes a tile shown small (a pinned speaker makes the others thumbnails) to
  get the low layer;
- how long, after the limit is lifted, until the weak viewer gets the high layer again.

It also reads the server's CPU time over each window (``/proc/<pid>/stat``) and the packets
the browsers received, for the server's cost per forwarded packet.

    sudo .venv/bin/python bench/weak_viewer.py          # ~2 min; needs root (namespaces)
    .venv/bin/python bench/weak_viewer.py --quick       # a short run (the test suite's smoke run)

Results go to ``bench/results/weak_viewer.json``; the run ends with a verdict on each of the
issue's thresholds. ``tests/web/test_browser_weak_link.py`` runs the same scenario in the test
suite and judges it the same way, with wider bounds (:class:`Thresholds`) that every run held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.join import MeetnowServer  # noqa: E402
from bench.netlab import SERVER, NetLab, missing_tools  # noqa: E402

# Per remote participant (by name) what this page receives, and what it sends.
STATS = """
async () => {
  const pc = window.meetnow.pc;
  if (!pc || !window.meetnow.slots) return null;
  const names = {};
  for (const [id, entry] of window.meetnow.participants) names[id] = entry.info.name;
  const byMid = {};
  for (const slot of window.meetnow.slots) byMid[slot.mid] = slot;
  if (!pc.benchId) pc.benchId = Math.random().toString(36).slice(2);  // a new one after a reconnection
  const out = {t: performance.now() / 1000, pc: pc.benchId, video: {}, audio: {},
               sent: {bytes: 0, packets: 0, layers: {}}};
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp") {
      const slot = byMid[r.mid];
      if (!slot || slot.direction !== "receive" || slot.source === "screen") return;
      const who = names[slot.participant] || slot.participant;
      if (r.kind === "video") {
        out.video[who] = {frames: r.framesDecoded || 0, arrived: r.framesReceived || 0,
                          width: r.frameWidth || 0, height: r.frameHeight || 0,
                          freezes: r.freezeCount || 0, frozen: r.totalFreezesDuration || 0,
                          bytes: r.bytesReceived || 0, packets: r.packetsReceived || 0, lost: r.packetsLost || 0,
                          keyframes: r.keyFramesDecoded || 0, plis: r.pliCount || 0, nacks: r.nackCount || 0};
      } else {
        out.audio[who] = {energy: r.totalAudioEnergy || 0, bytes: r.bytesReceived || 0, packets: r.packetsReceived || 0};
      }
    } else if (r.type === "outbound-rtp" && r.kind === "video") {
      out.sent.bytes += r.bytesSent || 0;
      out.sent.packets += r.packetsSent || 0;
      out.sent.layers[r.rid || "-"] = {width: r.frameWidth || 0, bytes: r.bytesSent || 0, frames: r.framesEncoded || 0,
                                       target: r.targetBitrate || 0,
                                       fps: r.framesPerSecond || 0, limited: r.qualityLimitationReason};
    }
  });
  out.received = Object.values(out.video).reduce((n, v) => n + v.packets, 0)
    + Object.values(out.audio).reduce((n, a) => n + a.packets, 0);
  out.paused = [...document.querySelectorAll(".tile.bandwidth-paused")].length;
  return out;
}
"""

PIN = """(name) => {
  for (const [id, entry] of window.meetnow.participants) {
    if (entry.info.name === name) { entry.tile.querySelector("button.pin").click(); return true; }
  }
  return false;
}"""

TILE_WIDTHS = """() => Object.fromEntries([...window.meetnow.participants.values()].map(
  (e) => [e.info.name, Math.round(e.tile.getBoundingClientRect().width)]))"""


@dataclass
class Options:
    people: int = 4
    weak: int = 4  # which participant gets the poor link (1-based)
    rate_kbit: int = 500
    loss_percent: int = 2
    warmup: float = 10.0  # seconds after everyone sees everyone, before the baseline
    baseline: float = 10.0
    settle: float = 10.0  # after the limit, before measuring
    window: float = 20.0
    small_within: float = 10.0  # how long a thumbnail may take to get the low layer
    lift_within: float = 15.0  # how long the high layer may take to come back
    lift_wait: float = 30.0  # how long the run waits for it (past lift_within: to say how late)
    width: int = 1280  # the browsers' viewport
    height: int = 800
    join_timeout: float = 60.0
    server_log: str = ""  # where to keep meetnow's log (its warnings), if anywhere


@dataclass
class Result:
    options: dict[str, Any]
    baseline: dict[str, Any] = field(default_factory=dict)
    limited: dict[str, Any] = field(default_factory=dict)
    small: dict[str, Any] = field(default_factory=dict)
    lifted: dict[str, Any] = field(default_factory=dict)
    tiles: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why the run stopped early (the phases measured are kept)
    reloads: list[str] = field(default_factory=list)  # pages loaded again before joining, and why


def name(n: int) -> str:
    return f"p{n}"


def others(options: dict[str, Any]) -> list[str]:
    """The participants other than the weak viewer (``options`` as in ``Result.options``)."""
    return [name(n) for n in range(1, options["people"] + 1) if n != options["weak"]]


def chromium_args(origin: str) -> list[str]:
    """bench/chromium.py's flags, for a page on the lab's server address instead of loopback."""
    from bench.chromium import CHROMIUM_ARGS

    args = [a for a in CHROMIUM_ARGS
            if not a.startswith(("--allow-loopback", "--host-resolver-rules", "--use-fake-device-for-media-stream"))]
    # Cameras at 30 frames per second, as most are (the fake one makes 20 by default).
    return args + [f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {SERVER}",
                   f"--unsafely-treat-insecure-origin-as-secure={origin}",
                   "--use-fake-device-for-media-stream=fps=30"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its children alive now (the server's
    media workers forward the packets)."""
    total = 0.0
    for one in _tree(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            try:
                pids += [int(child) for child in task.read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far (/proc/stat)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def window(before: dict[str, Any], after: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """What changed on each page between two readings (samples in between give minimums)."""
    out: dict[str, Any] = {}
    for page, a in after["pages"].items():
        b = before["pages"][page]
        dt = a["t"] - b["t"]
        viewer: dict[str, Any] = {"video": {}, "audio": {}}
        for who, v in a["video"].items():
            w = b["video"].get(who, {"frames": 0, "arrived": 0, "frozen": 0, "bytes": 0, "freezes": 0, "keyframes": 0,
                                     "plis": 0, "nacks": 0, "packets": 0, "lost": 0})
            widths = [s["pages"][page]["video"].get(who, {}).get("width", 0) for s in samples] + [v["width"]]
            viewer["video"][who] = {
                "fps": round((v["frames"] - w["frames"]) / dt, 2),
                "arrived_fps": round((v["arrived"] - w["arrived"]) / dt, 2),
                "kbps": round((v["bytes"] - w["bytes"]) * 8 / dt / 1000, 1),
                "width": v["width"], "height": v["height"], "min_width": min(widths), "max_width": max(widths),
                "widths": widths,
                "frozen_s": round(v["frozen"] - w["frozen"], 3), "freezes": v["freezes"] - w["freezes"],
                "keyframes": v["keyframes"] - w["keyframes"], "plis": v["plis"] - w["plis"],
                "nacks": v["nacks"] - w["nacks"],
                "loss_pct": round(100 * (v["lost"] - w["lost"]) / max(1, v["packets"] - w["packets"] + v["lost"] - w["lost"]), 2),
            }
        for who, v in a["audio"].items():
            w = b["audio"].get(who, {"energy": 0, "bytes": 0})
            viewer["audio"][who] = {"energy": round(v["energy"] - w["energy"], 6),
                                    "kbps": round((v["bytes"] - w["bytes"]) * 8 / dt / 1000, 1)}
        viewer["received_kbps"] = round(sum(x["kbps"] for x in viewer["video"].values())
                                        + sum(x["kbps"] for x in viewer["audio"].values()), 1)
        viewer["sent_video_kbps"] = round((a["sent"]["bytes"] - b["sent"]["bytes"]) * 8 / dt / 1000, 1)
        # What its browser lets its encoders send (its estimate, capped by the server's REMB),
        # averaged over the readings: unlike what they send, not lowered by a starved camera.
        targets = [sum(layer.get("target", 0) for layer in s["pages"][page]["sent"]["layers"].values())
                   for s in samples + [after]]
        viewer["target_video_kbps"] = round(sum(targets) / len(targets) / 1000, 1)
        viewer["sent_layers"] = {
            rid: {"width": layer["width"], "fps": layer["fps"], "limited": layer["limited"],
                  "encoded_fps": round((layer["frames"] - b["sent"]["layers"].get(rid, {}).get("frames", 0)) / dt, 2)}
            for rid, layer in a["sent"]["layers"].items()}
        viewer["paused_tiles"] = max(s["pages"][page]["paused"] for s in samples + [after])
        out[page] = viewer
    dt = after["wall"] - before["wall"]
    packets = sum(p["received"] for p in after["pages"].values()) - sum(p["received"] for p in before["pages"].values())
    cpu = after["cpu"] - before["cpu"]
    busy = (after["busy"][0] - before["busy"][0]) / max(1, after["busy"][1] - before["busy"][1])
    out["server"] = {
        "seconds": round(dt, 2),
        "cpu_pct": round(100 * cpu / dt, 1),
        "packets_forwarded_per_s": round(packets / dt, 1),
        "us_per_packet": round(1e6 * cpu / max(1, packets), 1),
        "machine_busy_pct": round(100 * busy * os.cpu_count(), 1),  # % of one core, like the rest
    }
    return out


class Scenario:
    """The lab, the server and the browsers of one run."""

    def __init__(self, options: Options, folder: Path) -> None:
        self.options = options
        self.folder = folder
        self.lab = NetLab(options.people, folder)
        self.server: MeetnowServer | None = None  # made once the lab holds its address
        self.pages: dict[str, Any] = {}
        self.console: list[str] = []  # the pages' warnings and errors, for when a run fails
        self.reloads: list[str] = []  # pages loaded a second time, and why
        self._playwright: Any = None
        self._browsers: list[Any] = []
        self._connections: dict[str, str] = {}  # page -> its peer connection, once all are in

    async def start(self) -> None:
        from playwright.async_api import async_playwright
        from bench.chromium import CHROMIUM

        self.lab.open()
        self.server = MeetnowServer(SERVER, "10.88.0.0/16", "Weak viewer benchmark")
        await self.server.start()
        url = await self.server.mint()
        self._playwright = await async_playwright().start()
        for n in range(1, self.options.people + 1):
            browser = await self._playwright.chromium.launch(
                executable_path=self.lab.chromium(n, CHROMIUM), headless=True, args=chromium_args(self.server.origin))
            self._browsers.append(browser)
            page = await browser.new_page(viewport={"width": self.options.width, "height": self.options.height})
            page.on("console", lambda m, who=name(n): self.console.append(f"{who} {m.type}: {m.text}")
                    if m.type in ("warning", "error") else None)
            page.on("requestfailed", lambda r, who=name(n): self.console.append(
                f"{who} request failed: {r.url} {r.failure}"))
            await self._join(page, url, name(n))
            self.pages[name(n)] = page
        await self._everyone_sees_everyone()

    async def _join(self, page: Any, url: str, who: str) -> None:
        """Open the meeting page and join. A page whose script never becomes ready (seen once
        in many runs, inside the test suite: one of its modules never arrived) is loaded
        again once, as a person would; ``reloads`` says so, and a second failure ends the run."""
        from playwright.async_api import TimeoutError as PageTimeout

        for attempt in (1, 2):
            await page.goto(url)
            try:
                await page.wait_for_selector("#join:not([disabled])", timeout=15_000)
                break
            except PageTimeout:
                if attempt == 2:
                    raise RuntimeError(f"{who}'s meeting page never became ready\n" + "\n".join(self.console[-20:]))
                self.reloads.append(f"{who}: the page was not ready after 15 s and was loaded again; "
                                    + "; ".join(self.console[-5:]))
        await page.fill("#name", who)
        await page.click("#join")

    async def _everyone_sees_everyone(self) -> None:
        deadline = time.monotonic() + self.options.join_timeout
        others = self.options.people - 1
        while True:
            reading = await self.read()
            ready = [p for p in reading["pages"].values()
                     if p and len([v for v in p["video"].values() if v["frames"] > 0]) == others
                     and len([a for a in p["audio"].values() if a["energy"] > 0]) == others]
            if len(ready) == len(self.pages):
                self._connections = {who: p["pc"] for who, p in reading["pages"].items()}
                return
            if time.monotonic() > deadline:
                seen = {page: {who: [v["frames"], round(p["audio"].get(who, {}).get("energy", 0), 4)]
                               for who, v in p["video"].items()} if p else None
                        for page, p in reading["pages"].items()}
                raise RuntimeError(f"not everyone saw and heard everyone within {self.options.join_timeout} s "
                                   f"(frames, audio energy): {json.dumps(seen)}\n" + "\n".join(self.console[-20:]))
            await asyncio.sleep(0.5)

    async def read(self) -> dict[str, Any]:
        """Every page's statistics now. Once everyone is in, a page that lost its peer
        connection (and made a new one) ends the run: its counters started again."""
        pages = {}
        for who, page in self.pages.items():
            pages[who] = await page.evaluate(STATS)
        lost = [who for who, pc in self._connections.items() if (pages[who] or {}).get("pc") != pc]
        if lost:
            raise RuntimeError(f"{', '.join(lost)} lost the connection to the server and reconnected "
                               f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs); server log:\n"
                               + self.server_log_tail())
        assert self.server is not None and self.server.process is not None
        return {"wall": time.monotonic(), "cpu": cpu_seconds(self.server.process.pid), "busy": machine_busy(),
                "pages": pages}

    def server_log_tail(self, lines: int = 15) -> str:
        """The server's last warnings and connection losses, for a failure message."""
        if self.server is None or not self.server.log.exists():
            return ""
        text = self.server.log.read_text(errors="replace").splitlines()
        worth = [line for line in text if " WARNING " in line or " ERROR " in line or "expired" in line]
        return "\n".join(worth[-lines:])

    async def measure(self, seconds: float) -> dict[str, Any]:
        """Readings at the start and end of ``seconds``, and every second in between."""
        before = await self.read()
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
            samples.append(await self.read())
        return window(before, samples[-1], samples[:-1])

    async def until(self, check: Any, limit: float, grace: float = 0.0) -> float | None:
        """Seconds until ``check(reading)`` holds (polled twice a second), or None."""
        start = time.monotonic()
        while True:
            reading = await self.read()
            if check(reading):
                return round(time.monotonic() - start, 2)
            if time.monotonic() - start > limit + grace:
                return None
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        for browser in self._browsers:
            try:
                await browser.close()
            except Exception:  # a browser that died already
                pass
        if self._playwright is not None:
            await self._playwright.stop()
        if self.server is not None:
            if self.options.server_log and self.server.log.exists():
                Path(self.options.server_log).write_bytes(self.server.log.read_bytes())
            self.server.stop()
        self.lab.close()


async def run(options: Options, folder: Path, progress: Any = print) -> Result:
    """The whole scenario; raises RuntimeError when the lab or the meeting cannot start.
    A run that stops later keeps the phases it measured and says why in ``error``."""
    result = Result(options=asdict(options))
    scenario = Scenario(options, folder)
    weak = name(options.weak)
    result.machine = {"cpus": os.cpu_count(), "load_before": os.getloadavg(), "python": platform.python_version()}
    try:
        await scenario.start()
        progress("everyone sees and hears everyone")
        await asyncio.sleep(options.warmup)
        result.tiles = await scenario.pages[name(1)].evaluate(TILE_WIDTHS)
        result.baseline = await scenario.measure(options.baseline)
        progress("baseline measured")
        scenario.lab.limit(options.weak, options.rate_kbit, options.loss_percent)
        await asyncio.sleep(options.settle)
        result.limited = await scenario.measure(options.window)
        progress("weak link measured")

        # A tile shown small: the first participant pins the second; the others become thumbnails.
        viewer, pinned = name(1), name(2)
        thumbs = [name(n) for n in range(3, options.people + 1)]
        await scenario.pages[viewer].evaluate(PIN, pinned)

        def small_is_low(reading: dict[str, Any]) -> bool:
            video = reading["pages"][viewer]["video"]
            return all(0 < video[t]["width"] <= 320 for t in thumbs) and video[pinned]["width"] >= 600

        result.small = {"viewer": viewer, "pinned": pinned, "thumbnails": thumbs,
                        "seconds": await scenario.until(small_is_low, options.small_within, grace=10)}
        result.small["tile_widths"] = await scenario.pages[viewer].evaluate(TILE_WIDTHS)
        result.small["received"] = {k: v["width"] for k, v in (await scenario.read())["pages"][viewer]["video"].items()}
        await scenario.pages[viewer].evaluate(PIN, pinned)  # unpinned again
        progress("thumbnails measured")

        scenario.lab.lift(options.weak)
        frames_then = (await scenario.read())["pages"][weak]["video"]

        def high_again(reading: dict[str, Any]) -> bool:
            video = reading["pages"][weak]["video"]
            return all(v["width"] >= 600 and v["frames"] > frames_then[who]["frames"] for who, v in video.items())

        result.lifted = {"seconds": await scenario.until(high_again, options.lift_wait)}
        result.lifted["after"] = await scenario.measure(5.0)
        progress("limit lifted")
    except RuntimeError as exc:
        if not result.baseline:
            raise  # nothing measured: the lab or the meeting did not start
        result.error = str(exc)
    finally:
        result.machine["load_after"] = os.getloadavg()
        result.reloads = scenario.reloads
        await scenario.close()
    return result


@dataclass(frozen=True)
class Thresholds:
    """What the scenario must show, judged by :func:`verdict`; the defaults are the issue's."""

    weak_fps: float = 10.0  # the weak viewer decodes every publisher at least this often...
    weak_frozen_s: float = 2.0  # ...frozen for less than this in the window
    same_frame_rate: float = 0.9  # the other viewers keep this share of their frame rate...
    high_width: int = 600  # ...and the high layer...
    high_share: float = 1.0  # ...in this share of the window's readings (one a second)
    publisher_keeps: float = 0.7  # publishers send at least this share of what they sent...
    publisher_allowed: float = 0.7  # ...and their encoders' target bitrate keeps this share
    lift_within: float | None = None  # the high layer back this soon (None: the run's option)


def verdict(result: Result, limits: Thresholds = Thresholds()) -> list[tuple[str, str, bool]]:
    """Each threshold: what it asks, what was measured, whether it was met (none before the
    weak link was measured)."""
    o = result.options
    weak = name(o["weak"])
    if not result.limited:
        return []
    rest = others(o)
    video = result.limited[weak]["video"]
    fps = min(v["fps"] for v in video.values())
    frozen = max(v["frozen_s"] for v in video.values())
    quiet = [who for who, a in result.limited[weak]["audio"].items() if not a["energy"] > 0]
    ratio = min(delivered(result.limited, v) / max(delivered(result.baseline, v), 1e-9) for v in rest)
    width = min(result.limited[v]["video"][w]["min_width"] for v in rest for w in result.limited[v]["video"])
    high = min(sum(x >= limits.high_width for x in seen) / len(seen)
               for v in rest for seen in (s["widths"] for s in result.limited[v]["video"].values()))
    kept = min(result.limited[p]["sent_video_kbps"] / max(result.baseline[p]["sent_video_kbps"], 1e-9)
               for p in rest + [weak])
    allowed = min(result.limited[p]["target_video_kbps"] / max(result.baseline[p]["target_video_kbps"], 1e-9)
                  for p in rest + [weak])
    small, lifted = result.small.get("seconds"), result.lifted.get("seconds")
    small_within = o["small_within"]
    lift_within = o["lift_within"] if limits.lift_within is None else limits.lift_within
    return [
        (f"weak viewer decodes every publisher at {limits.weak_fps:g} fps or more", f"{fps} fps at least",
         fps >= limits.weak_fps),
        (f"weak viewer frozen under {limits.weak_frozen_s:g} s per publisher", f"{frozen} s at most",
         frozen < limits.weak_frozen_s),
        ("weak viewer hears everyone", "silent: " + (", ".join(quiet) or "nobody"), not quiet),
        (f"others keep {limits.same_frame_rate:.0%} of their frame rate (frames arriving per frame sent)",
         f"{ratio:.0%} at least",
         ratio >= limits.same_frame_rate),
        (f"others keep the high layer ({limits.high_width} px or more)"
         + (f" {limits.high_share:.0%} of the time" if limits.high_share < 1 else ""),
         f"{width} px at least, {high:.0%} of the time at {limits.high_width} px or more", high >= limits.high_share),
        (f"publishers keep {limits.publisher_keeps:.0%} of their video", f"{kept:.0%} at least",
         kept >= limits.publisher_keeps),
        (f"publishers are allowed {limits.publisher_allowed:.0%} of what they were (encoder target bitrate)",
         f"{allowed:.0%} at least", allowed >= limits.publisher_allowed),
        (f"a thumbnail gets the low layer within {small_within:g} s", f"{small} s",
         small is not None and small <= small_within),
        (f"the high layer back within {lift_within:g} s of the lift", f"{lifted} s",
         lifted is not None and lifted <= lift_within),
    ]


def delivered(phase: dict[str, Any], viewer: str) -> float:
    """Frames arriving at ``viewer`` per frame its publishers encoded on their best layer.

    What the server does to a viewer's frame rate, apart from the machine: on two cores
    shared by four Chromiums, a publisher's camera makes 14-30 frames a second and a
    viewer decodes 60-95% of the frames that arrive, from one window to the next, whatever
    the server forwards. Summed over the viewer's publishers: a viewer short of CPU reports
    a lower estimate now and then, and is sent fewer frames of one publisher for a moment
    (as it should be), which one stream's figure reads as much as 15% off."""
    arrived = encoded = 0.0
    for publisher, video in phase[viewer]["video"].items():
        layers = phase[publisher]["sent_layers"].values()
        encoded += max(layers, key=lambda layer: layer["width"], default={}).get("encoded_fps", 0.0)
        arrived += video["arrived_fps"]
    return arrived / max(encoded, 1e-9)


def decoded_ratio(result: Result) -> float:
    """The others' decoded frame rate with the weak link, as a share of it without (the
    lowest of any viewer and publisher): shown, not judged (see :func:`delivered`)."""
    return min(result.limited[v]["video"][w]["fps"] / max(result.baseline[v]["video"][w]["fps"], 1e-9)
               for v in others(result.options) for w in result.limited[v]["video"])


def table(result: Result) -> str:
    """The figures as Markdown tables."""
    o = result.options
    weak = name(o["weak"])
    lines = [f"Weak viewer: {weak}, downlink {o['rate_kbit']} kbit/s with {o['loss_percent']}% loss; "
             f"{o['people']} people publishing, viewport {o['width']}x{o['height']}.", "",
             "| viewer | publisher | phase | kbit/s | width | fps | freezes (s) | loss % |",
             "|---|---|---|---|---|---|---|---|"]
    for phase, data in (("unlimited", result.baseline), ("limited", result.limited),
                        ("lifted", result.lifted.get("after", {}))):
        for viewer in sorted(k for k in data if k != "server"):
            for who, v in sorted(data[viewer]["video"].items()):
                lines.append(f"| {viewer}{' (weak)' if viewer == weak else ''} | {who} | {phase} | {v['kbps']} | "
                             f"{v['min_width']}-{v['max_width']} | {v['fps']} | {v['frozen_s']} | {v['loss_pct']} |")
    lines += ["", "| publisher | phase | video sent kbit/s | encoder target kbit/s |", "|---|---|---|---|"]
    for phase, data in (("unlimited", result.baseline), ("limited", result.limited)):
        for viewer in sorted(k for k in data if k != "server"):
            lines.append(f"| {viewer} | {phase} | {data[viewer]['sent_video_kbps']} | "
                         f"{data[viewer].get('target_video_kbps', '')} |")
    measured = [(phase, data) for phase, data in (("unlimited", result.baseline), ("limited", result.limited)) if data]
    lines += ["", "| phase | server CPU % | packets forwarded/s | us per packet | machine busy, % of a core |",
              "|---|---|---|---|---|"]
    for phase, data in measured:
        s = data["server"]
        lines.append(f"| {phase} | {s['cpu_pct']} | {s['packets_forwarded_per_s']} | {s['us_per_packet']} | "
                     f"{s['machine_busy_pct']} |")
    if result.error:
        lines += ["", f"The run stopped early: {result.error.splitlines()[0]}"]
    for reload in result.reloads:
        lines += ["", f"Loaded again: {reload}"]
    lines += ["", f"Thumbnails got the low layer after {result.small.get('seconds')} s; "
                  f"the weak viewer got the high layer back {result.lifted.get('seconds')} s after the limit was lifted."]
    if result.limited and result.baseline:
        lines += ["", f"The others decoded {decoded_ratio(result):.0%} at least of the frames a second they decoded "
                      "without the limit (the machine's CPU as much as the server: not judged)."]
    judged = verdict(result)
    if judged:
        lines += ["", "| threshold | measured | |", "|---|---|---|"]
        lines += [f"| {asked} | {measured} | {'met' if met else '**missed**'} |" for asked, measured, met in judged]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Options()
    for f in ("rate_kbit", "loss_percent", "warmup", "baseline", "settle", "window", "width", "height"):
        parser.add_argument("--" + f.replace("_", "-"), type=type(getattr(defaults, f)), default=getattr(defaults, f))
    parser.add_argument("--quick", action="store_true", help="short phases (the test suite's smoke run)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "weak_viewer.json")
    args = parser.parse_args()
    problems = missing_tools()
    if problems:
        print("this benchmark needs " + ", ".join(problems), file=sys.stderr)
        return 2
    from bench import netns

    netns.enter(veth=False)
    options = Options(**{f: getattr(args, f) for f in ("rate_kbit", "loss_percent", "warmup", "baseline", "settle",
                                                        "window", "width", "height")})
    options.server_log = str(args.output.with_suffix(".meetnow.log"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.quick:
        options.warmup, options.baseline, options.settle, options.window = 3.0, 3.0, 3.0, 4.0
    with tempfile.TemporaryDirectory(prefix="meetnow-weak-") as folder:
        result = asyncio.run(run(options, Path(folder)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(asdict(result), indent=2))
    print(table(result))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
