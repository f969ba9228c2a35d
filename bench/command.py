"""Benchmark: signed ``/meetnow`` requests to /slack/events, time from request to HTTP response.

Three processes, all on 127.0.0.1: a fake Slack Web API, the meetnow server (built as
``meetnow serve`` builds it, with the Slack bot and outbox running against the fake), and
this one sending signed slash commands. Measures p50/p90/p99 over sequential commands and
throughput at a fixed concurrency; prints a table and writes JSON.

    python bench/command.py            # 1,000 sequential + 4,000 at concurrency 16
    python bench/command.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.fake_slack import BOT_TOKEN, SIGNING_SECRET, command_payload, sign  # noqa: E402
from bench.harness import results  # noqa: E402
from bench.harness.processes import READY, Child, end, spawn  # noqa: E402

DEFAULT_OUT = results.RESULTS / "command.json"


# -- the two helper processes ------------------------------------------------------------


async def serve_fake_slack() -> None:
    """Role ``fake-slack``: the fake Web API until stdin closes."""
    from bench.fake_slack import FakeSlack

    fake = await FakeSlack().start()
    print(READY, fake.port, flush=True)
    await _until_stdin_closes()
    await fake.close()


async def serve_meetnow(api_url: str, store_path: str) -> None:
    """Role ``server``: meetnow with its Slack bot, as ``meetnow serve`` runs it."""
    from aiohttp import web

    from meeting.config import Config, MediaConfig, ServerConfig, SlackConfig, StoreConfig
    from meeting.store.sqlite import SqliteStore
    from bench.fake_sfu import FakeSfu  # no media plane is needed to answer commands
    from web.accesslog import RedactingAccessLogger
    from web.server import build_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = Config(
        server=ServerConfig(host="127.0.0.1", port=8080, public_url="http://127.0.0.1:8080"),
        store=StoreConfig(path=store_path),
        media=MediaConfig(announce_addresses=("127.0.0.1",), allowed_peer_networks=("127.0.0.0/8",)),
        slack=SlackConfig(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_url=api_url),
    )
    store = SqliteStore(store_path)
    await store.open()
    server = build_server(config, store, sfu=FakeSfu())
    runner = web.AppRunner(server.app, access_log_class=RedactingAccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await server.start_background()
    print(READY, runner.addresses[0][1], flush=True)
    await _until_stdin_closes()
    await server.stop_background()
    await runner.cleanup()
    await store.close()


async def _until_stdin_closes() -> None:
    """The parent holds our stdin; when it exits or closes it, we stop."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


def start_role(role: str, log_path: Path, *args: str) -> Child:
    """Start this script in ``role`` and wait for its READY line; it ends when its stdin closes."""
    return spawn([sys.executable, str(Path(__file__).resolve()), "--role", role, *args], log_path)


# -- the load ----------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "requests": len(lat) + self.errors,
            "concurrency": self.concurrency,
            "errors": self.errors,
            "p50_ms": round(percentile(lat, 50), 3),
            "p90_ms": round(percentile(lat, 90), 3),
            "p99_ms": round(percentile(lat, 99), 3),
            "max_ms": round(lat[-1], 3) if lat else 0.0,
            "mean_ms": round(statistics.fmean(lat), 3) if lat else 0.0,
            "throughput_rps": round((len(lat) + self.errors) / self.wall_s, 1) if self.wall_s else 0.0,
        }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


class Load:
    """Sends signed slash commands and times each from request start to full response."""

    def __init__(self, session: aiohttp.ClientSession, server_port: int, fake_port: int) -> None:
        self.session = session
        self.url = f"http://127.0.0.1:{server_port}/slack/events"
        self.response_url = f"http://127.0.0.1:{fake_port}/response/bench"
        self.sent = 0

    async def one(self, phase: Phase) -> None:
        self.sent += 1
        payload = command_payload(f"Bench {self.sent}", response_url=self.response_url,
                                  trigger_id=f"bench.{self.sent}")
        body = urllib.parse.urlencode(payload)
        headers = sign(body)  # signing is the sender's cost, outside the timing
        started = time.perf_counter()
        try:
            async with self.session.post(self.url, data=body, headers=headers) as response:
                text = await response.text()
            elapsed = (time.perf_counter() - started) * 1000
            if response.status == 200 and "#host=" in text:
                phase.latencies_ms.append(elapsed)
            else:
                phase.errors += 1
        except aiohttp.ClientError:
            phase.errors += 1

    async def sequential(self, count: int) -> Phase:
        phase = Phase("sequential", 1)
        started = time.perf_counter()
        for _ in range(count):
            await self.one(phase)
        phase.wall_s = time.perf_counter() - started
        return phase

    async def concurrent(self, count: int, concurrency: int) -> Phase:
        phase = Phase("concurrent", concurrency)
        remaining = count

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await self.one(phase)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        phase.wall_s = time.perf_counter() - started
        return phase


async def delivered_posts(session: aiohttp.ClientSession, fake_port: int, expected: int,
                          wait_s: float) -> int:
    """How many channel posts reached the fake Slack, waiting up to ``wait_s`` for all."""
    deadline = time.monotonic() + wait_s
    while True:
        async with session.get(f"http://127.0.0.1:{fake_port}/stats") as response:
            posts = (await response.json()).get("chat.postMessage", 0)
        if posts >= expected or time.monotonic() > deadline:
            return int(posts)
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace, server_port: int, fake_port: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=args.concurrency + 1)
    async with aiohttp.ClientSession(connector=connector) as session:
        load = Load(session, server_port, fake_port)
        await load.sequential(args.warmup)  # bolt's first request does auth.test; pools fill
        sequential = await load.sequential(args.sequential)
        concurrent = await load.concurrent(args.concurrent, args.concurrency)
        posts = await delivered_posts(session, fake_port, load.sent, args.delivery_wait)
    return {
        "benchmark": "slack_command",
        "what": "signed /meetnow POST /slack/events -> HTTP response (host link ack), loopback",
        "quick": args.quick,
        "warmup_requests": args.warmup,
        "sequential": sequential.summary(),
        "concurrent": concurrent.summary(),
        "channel_posts": {"commands": load.sent, "delivered": posts, "waited_up_to_s": args.delivery_wait},
        "environment": {**results.machine(), "git": results.git_commit()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"meetnow /meetnow over HTTP: {result['what']}",
             f"{'phase':<11} {'requests':>8} {'conc':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
             f"{'max ms':>8} {'req/s':>8} {'errors':>6}"]
    for name in ("sequential", "concurrent"):
        r = result[name]
        lines.append(f"{name:<11} {r['requests']:>8} {r['concurrency']:>4} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} "
                     f"{r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} {r['throughput_rps']:>8.1f} {r['errors']:>6}")
    posts = result["channel_posts"]
    lines.append(f"channel posts delivered by the outbox: {posts['delivered']} of {posts['commands']} "
                 f"(waited up to {posts['waited_up_to_s']} s)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time signed /meetnow slash commands against meetnow's /slack/events "
                    "(loopback only: a fake Slack API and the server run as local processes).")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 100 sequential, 400 concurrent")
    parser.add_argument("--sequential", type=int, default=None, help="sequential commands (default 1000)")
    parser.add_argument("--concurrent", type=int, default=None, help="commands at concurrency (default 4000)")
    parser.add_argument("--concurrency", type=int, default=16, help="in-flight requests (default 16)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed commands first (default 50)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="give up after this many seconds (default 300, quick 60)")
    parser.add_argument("--delivery-wait", type=float, default=None,
                        help="seconds to wait for the outbox to deliver every channel post (default 60, quick 15)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result (default {DEFAULT_OUT})")
    parser.add_argument("--role", choices=["fake-slack", "server"], help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.sequential = args.sequential if args.sequential is not None else (100 if quick else 1000)
    args.concurrent = args.concurrent if args.concurrent is not None else (400 if quick else 4000)
    args.warmup = args.warmup if args.warmup is not None else (10 if quick else 50)
    args.timeout = args.timeout if args.timeout is not None else (60.0 if quick else 300.0)
    args.delivery_wait = args.delivery_wait if args.delivery_wait is not None else (15.0 if quick else 60.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "fake-slack":
        asyncio.run(serve_fake_slack())
        return 0
    if args.role == "server":
        asyncio.run(serve_meetnow(args.api_url, args.store))
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="meetnow-bench-") as tmp:
        work = Path(tmp)
        fake = start_role("fake-slack", work / "fake-slack.log")
        server = None
        try:
            server = start_role("server", work / "server.log",
                                "--api-url", f"http://127.0.0.1:{fake.port}/api/",
                                "--store", str(work / "bench.sqlite3"))
            result = asyncio.run(asyncio.wait_for(run(args, server.port, fake.port), args.timeout))
        except asyncio.TimeoutError:
            print(f"benchmark did not finish within {args.timeout} s", file=sys.stderr)
            return 1
        finally:
            if server is not None:
                end(server.process)
            end(fake.process)
    results.report(result, args.out, table(result), started)
    return 0 if result["sequential"]["errors"] == 0 and result["concurrent"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
