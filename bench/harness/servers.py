"""The servers a forwarding row runs on, their options, and starting them.

meetnow is its SFU in a child process (:mod:`bench.harness.control`), one peer connection
per participant; or, with ``--workers``, the real ``meetnow serve`` with that many media
worker processes (:mod:`bench.harness.serve`). Janus's videoroom (bench/janus.py) is the
baseline, in its faster configuration (``event_loops = 2``) or its default one. Janus never gathers candidates on
loopback, so it runs only inside the private network namespace with a veth pair
(bench/netns.py); both servers are then measured on the veth address.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench import janus, netns
from bench.harness.control import SfuProcess
from bench.harness.load import Gathering, gather_people
from bench.harness.serve import ServeBackend
from bench.synthetic import EncodedMedia, LatencyStamps

# --servers name -> (label in the tables, event_loops)
JANUS_CONFIGS = {"janus2": ("Janus, event_loops=2", 2), "janus": ("Janus, default", None)}


def media_address() -> str:
    """Where media goes: the veth address inside the namespace that has one, else loopback."""
    return netns.VETH_ADDRESS if netns.inside() == "veth" else "127.0.0.1"


class MeetnowBackend:
    """meetnow's SFU in a child process, one peer connection per participant."""

    label = "meetnow"

    def __init__(self, address: str, receive_loss: float = 0.0, profile: Path | None = None,
                 log: Path | None = None, event_loop: str = "uvloop") -> None:
        self.address = address
        argv = ["-m", "bench.harness.control", "--address", address, "--receive-loss", str(receive_loss),
                "--event-loop", event_loop]
        self.sfu = SfuProcess(argv + (["--profile", str(profile)] if profile else []), log)

    @property
    def pid(self) -> int:
        return self.sfu.pid

    def processes(self) -> dict[str, int]:
        return {"sfu": self.sfu.pid}

    @property
    def log(self) -> Path | None:
        return self.sfu.log

    async def start(self) -> None:
        await self.sfu.start()

    async def close(self) -> None:
        await self.sfu.close()

    async def counters(self, reset_peaks: bool = False) -> dict | None:
        return await self.sfu.totals(reset_peaks=reset_peaks)

    def errors(self) -> list[str]:
        return list(self.sfu.errors)

    async def gather(self, room: str, publishers: int, viewers: int, media: EncodedMedia,
                     stamps: LatencyStamps) -> Gathering:
        """Publishers p0.. publish mic and camera; viewers v.. only watch; all see everyone.
        When one cannot join, those who did leave."""
        self.sfu.errors.clear()

        async def join(person: Any, sources: list[str]) -> None:
            await self.sfu.join(room, person, sources)

        return await gather_people(room, publishers, viewers, media, stamps, self.address, join, self.disperse)

    async def disperse(self, room: str, gathering: Gathering) -> None:
        """Everyone leaves and closes, even when a leave fails (the first failure is raised)."""
        failed: Exception | None = None
        for person in gathering.everyone:
            try:
                await self.sfu.leave(room, person)
            except Exception as exc:
                failed = failed or exc
            await person.close()
        if failed is not None:
            raise failed


def _configured(name: str, args: argparse.Namespace, address: str, skipped: dict[str, str]) -> list[Any]:
    """The servers ``--servers`` ``name`` stands for here, not started yet."""
    if name == "meetnow" and args.workers:  # meetnow serve, once per number of media workers
        return [ServeBackend(address, count, args.output.with_suffix(f".meetnow-{count}w.log"), args.event_loop)
                for count in args.workers]
    if name == "meetnow":
        log = args.output.with_suffix(".meetnow.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        return [MeetnowBackend(address, args.receive_loss, args.profile, log, args.event_loop)]
    label, loops = JANUS_CONFIGS[name]
    if netns.inside() != "veth":
        skipped[label] = "no private network namespace (needs root): Janus cannot run on loopback"
        return []
    if janus.janus_binary() is None:
        skipped[label] = "janus is not installed (apt-get install -y janus)"
        return []
    return [janus.JanusBackend(label, event_loops=loops, enforce=netns.VETH_NAME, address=address)]


async def start_backends(args: argparse.Namespace, address: str, skipped: dict[str, str]) -> list[Any]:
    """meetnow and the Janus configurations of ``args.servers`` that can run here; why
    the others cannot goes into ``skipped`` (label -> reason)."""
    backends: list[Any] = []
    try:
        for name in args.servers:
            for backend in _configured(name, args, address, skipped):
                await backend.start()
                backends.append(backend)
    except BaseException:
        for backend in backends:  # no server left running when one cannot start
            await backend.close()
        raise
    for label, why in skipped.items():
        print(f"  skipping {label}: {why}", file=sys.stderr, flush=True)
    return backends


def server_log_summary(backends: list[Any]) -> dict | None:
    """Where meetnow's server wrote its warnings, and how many tracebacks it holds."""
    for backend in backends:
        if isinstance(backend, (MeetnowBackend, ServeBackend)) and backend.log is not None and backend.log.exists():
            text = backend.log.read_text(errors="replace")
            return {"path": str(backend.log), "tracebacks": text.count("Traceback (most recent call last)"),
                    "lines": len(text.splitlines())}
    return None


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The servers, media, quiet-machine and namespace options of forwarding and room size."""
    parser.add_argument("--servers", nargs="*", default=["meetnow", "janus2"],
                        choices=["meetnow", "janus2", "janus"],
                        help="servers to compare: meetnow, janus2 (Janus with event_loops = 2, the baseline), "
                             "janus (Janus's default configuration); default: meetnow janus2")
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="the event loop meetnow runs on, its SFU alone or `meetnow serve` (server.event_loop; "
                             "default uvloop, as the server's)")
    parser.add_argument("--workers", type=int, nargs="+", metavar="N",
                        help="measure meetnow as `meetnow serve` with server.workers = N media worker processes, "
                             "once per N given (e.g. --workers 1 2); without it, meetnow is its SFU alone in one "
                             "process (one worker, without the front)")
    parser.add_argument("--at-once", type=int, default=1, metavar="R",
                        help="run R rooms of each size at once and measure them together (e.g. six rooms of four: "
                             "--at-once 6 with a room size of 4)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of media before measuring")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=500_000, help="target VP8 bitrate, bit/s")
    parser.add_argument("--loop", type=float, default=4.0, help="seconds of pre-encoded media, sent in a loop")
    parser.add_argument("--quiet", type=float, default=25.0,
                        help="before each window, wait until other work on the machine uses less than this "
                             "%% of one core (0: do not wait)")
    parser.add_argument("--quiet-wait", type=float, default=20.0, help="seconds to wait for that at most")
    parser.add_argument("--no-netns", action="store_true",
                        help="do not enter a private network namespace (meetnow only, on 127.0.0.1)")


def quick(args: argparse.Namespace) -> None:
    """The tiny media and timing of ``--quick`` runs (the test suite's)."""
    args.seconds, args.warmup, args.loop, args.quiet = 1.0, 0.2, 2.0, 0.0
    args.width, args.height, args.bitrate = 320, 240, 300_000
