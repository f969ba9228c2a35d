"""Room size: the largest full room a server holds at 30 fps with < 1% loss on this machine.

Everyone in the room publishes (the synthetic VP8 640x480 30 fps ~500 kbit/s + Opus of
bench/forwarding.py) and watches everyone else. N grows step by step until a room fails
or a bound is reached (largest N, or a time budget per server). A room holds when the
viewers' mean frame rate is at least 29 fps, no viewer leg is below 27 fps, loss is under
1%, and the median added video latency is under 100 ms (--max-latency: an overloaded
server queues seconds of media, then catches up in bursts above 30 fps, before it drops
any; whether fps and loss alone held is reported too). A room fails once it failed twice
in windows that other work on the machine did not disturb (at most three tries), so one
noisy window does not end the search.

The synthetic participants run in one process on the same machine, so a large enough
room saturates them too: each row reports the busiest thread of the server (meetnow's
event loop: a room of one meetnow process is capped at one core) and of the client, and
the verdict says which one ran out first.

meetnow and, when it can run (root for the network namespace, Debian's janus package),
Janus with event_loops = 2 are measured in the same run, in a private network namespace
as in bench/forwarding.py. ``--quick`` measures two tiny rooms per server (for the test
suite).

``--at-once R`` grows R rooms of N at once (the largest N when R rooms run side by side);
``--workers 1 2`` measures meetnow as the real ``meetnow serve`` with one and with two
media worker processes, each process's CPU reported on its own, and the verdict says
whether a worker, the synthetic clients or the whole machine ran out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import janus, netns  # noqa: E402
from bench.harness import results, servers  # noqa: E402
from bench.harness.load import direct_latency  # noqa: E402
from bench.harness.results import fmt  # noqa: E402
from bench.harness.rows import Backend, disturbed, run_room  # noqa: E402
from bench.synthetic import EncodedMedia, encoded_media  # noqa: E402

SATURATED = 90.0  # % of one core: a thread this busy is the bottleneck


def holds_fps_and_loss(row: dict) -> bool:
    return not row["errors"] and row["fps"] >= 29.0 and row["fps_worst_leg"] >= 27.0 and row["loss_percent"] < 1.0


def holds(row: dict, max_latency: float) -> bool:
    """30 fps, < 1% loss, and a delay people can talk over."""
    added = row["added_video_ms"]
    return holds_fps_and_loss(row) and added is not None and added < max_latency


def bottleneck(row: dict) -> str:
    server, client = row["busiest_thread_percent"], row["client_busiest_thread_percent"]
    busiest = row.get("process_busiest_thread_percent") or {}
    where = max(busiest, key=busiest.get) if len(busiest) > 1 else ""  # which of the server's processes
    if holds_fps_and_loss(row) and row["errors"] == []:
        why = f"latency: {fmt(row['added_video_ms'], '.0f')} ms added"
        return why + f" (server's busiest thread at {server:.0f}%, clients' event loop at {client:.0f}%)"
    if row["client_udp_drops"]:
        return (f"synthetic clients fell behind ({row['client_udp_drops']} datagrams dropped at their sockets; "
                f"their event loop at {client:.0f}%, server's busiest thread at {server:.0f}%)")
    if server >= SATURATED and server >= client:
        return f"server: its busiest thread{' (' + where + ')' if where else ''} at {server:.0f}% of a core"
    if client >= SATURATED:
        return f"synthetic clients: their event loop at {client:.0f}% of a core"
    if server + client >= 180:
        return f"both cores busy (server {row['cpu_percent']:.0f}%, clients {row['client_cpu_percent']:.0f}%)"
    return "no single thread saturated"


async def search(backend: Backend, media: EncodedMedia, args: argparse.Namespace,
                 direct: tuple[float | None, float | None]) -> dict:
    """Grow the room from ``args.start`` until it fails on ``backend`` or a bound is reached."""
    steps: list[dict] = []
    largest = None
    failed = None
    undetermined = None
    started = time.monotonic()
    n = args.start
    while n <= args.max:
        if time.monotonic() - started > args.budget:
            break
        verdict = None
        attempts = 0
        for attempt in range(3):
            name = f"room N={n}" if args.at_once == 1 else f"{args.at_once} rooms of N={n}"
            measured = await run_room(backend, media, name, f"n{n}-{attempt}", n, 0, args.warmup, args.seconds,
                                      attempt, (args.quiet, args.quiet_wait), rooms=args.at_once)
            row = asdict(measured)
            for kind, direct_ms in zip(("video", "audio"), direct):
                if row[f"latency_{kind}_ms"] is not None and direct_ms is not None:
                    row[f"added_{kind}_ms"] = row[f"latency_{kind}_ms"] - direct_ms
            row["holds"] = holds(row, args.max_latency)
            row["holds_fps_and_loss"] = holds_fps_and_loss(row)
            row["bottleneck"] = bottleneck(row)
            steps.append(row)
            print(f"  {backend.label:22} N={n:<3} fps {row['fps']:5.1f} (worst {row['fps_worst_leg']:4.1f})  "
                  f"loss {row['loss_percent']:5.2f}%  server {row['cpu_percent']:5.1f}% "
                  f"(busiest thread {row['busiest_thread_percent']:.0f}%)  clients {row['client_cpu_percent']:5.1f}%"
                  f"  other work {row['other_cpu_percent']:3.0f}%  -> {'holds' if row['holds'] else 'fails'}"
                  + (f"  ({_by_process(row)})" if len(row["process_cpu_percent"]) > 1 else ""),
                  file=sys.stderr, flush=True)
            await asyncio.sleep(0.5)
            if row["holds"]:
                verdict = True
                break
            verdict = False
            # a failure counts once it is seen twice, in windows other work did not disturb
            if not disturbed(measured, args.quiet):
                attempts += 1
            if attempts >= 2:
                break
        if not verdict:
            tried = [r for r in steps if r["publishers"] == n]
            failed = next((r for r in reversed(tried) if not r["errors"]), tried[-1])
            if attempts < 2:  # every failing window was disturbed: no verdict on this size
                undetermined = n
            break
        largest = n
        n += args.step
    reason = ("disturbed by other work" if undetermined else "failed" if failed
              else "reached --max" if n > args.max else "time budget spent")
    return {
        "server": backend.label,
        "largest_room_held": largest,
        "stopped": reason,
        "first_failure": ({"n": failed["publishers"], "bottleneck": failed["bottleneck"],
                           "disturbed": undetermined is not None} if failed else None),
        "steps": steps,
    }


def _by_process(row: dict) -> str:
    """Each server process's CPU, e.g. "front 2 / worker 0 41 / worker 1 43"."""
    return " / ".join(f"{label} {value:.0f}" for label, value in row["process_cpu_percent"].items())


async def bench(args: argparse.Namespace) -> dict:
    load_at_start = os.getloadavg()
    address = servers.media_address()
    media = encoded_media(args.width, args.height, fps=args.fps, bitrate=args.bitrate, seconds=args.loop)
    skipped: dict[str, str] = {}
    backends = await servers.start_backends(args, address, skipped)
    searched = []
    try:
        direct = await direct_latency(media, 3.0, address)
        for backend in backends:
            searched.append(await search(backend, media, args, direct))
    finally:
        for backend in backends:
            await backend.close()
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": results.machine(),
        "network": netns.describe(address),
        "janus_version": janus.janus_version(),
        "load": {"video": f"VP8 {args.width}x{args.height} {args.fps} fps",
                 "video_bitrate_measured": round(media.video_bitrate), "audio": "Opus 20 ms",
                 "seconds_per_room": args.seconds, "rooms_at_once": args.at_once, "workers": args.workers},
        "load_average": {"start": [round(v, 2) for v in load_at_start],
                         "end": [round(v, 2) for v in os.getloadavg()]},
        "criteria": (f"mean fps >= 29, every leg >= 27 fps, loss < 1%, median added video latency "
                     f"< {args.max_latency:g} ms (fails when seen twice, at most 3 tries)"),
        "direct_latency_ms": {"video": direct[0], "audio": direct[1]},
        "skipped": skipped,
        "meetnow_log": servers.server_log_summary(backends),
        "servers": searched,
    }


def table(result: dict) -> str:
    several = any(len(r["process_cpu_percent"]) > 1 for server in result["servers"] for r in server["steps"])
    lines = ["| server | " + ("rooms x N" if result["load"]["rooms_at_once"] > 1 else "N")
             + " | fps (worst leg) | loss % | added video ms | server CPU % | "
             + ("CPU by process % | " if several else "")
             + "busiest server thread % | client CPU % | holds | fps and loss alone |",
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if several else "")]
    for server in result["servers"]:
        for r in server["steps"]:
            size = f"{r['rooms']} x {r['publishers']}" if r["rooms"] > 1 else str(r["publishers"])
            lines.append(f"| {server['server']} | {size} | {r['fps']:.1f} ({r['fps_worst_leg']:.1f}) | "
                         f"{r['loss_percent']:.2f} | {fmt(r['added_video_ms'], '.1f')} | {r['cpu_percent']:.1f} | "
                         + (f"{_by_process(r)} | " if several else "") +
                         f"{r['busiest_thread_percent']:.0f} | {r['client_cpu_percent']:.0f} | "
                         f"{'yes' if r['holds'] else 'no'} | {'yes' if r['holds_fps_and_loss'] else 'no'} |")
    lines.append("")
    for server in result["servers"]:
        failure = server["first_failure"]
        verdict = ("could not be judged: every window was disturbed (other work, the synthetic clients "
                   "dropping datagrams, or errors)" if failure and failure["disturbed"] else "failed")
        lines.append(f"{server['server']}: largest room held N = {fmt(server['largest_room_held'], 'd')}"
                     + (f"; N = {failure['n']} {verdict} ({failure['bottleneck']})" if failure
                        else f" ({server['stopped']})"))
    for label, why in result["skipped"].items():
        lines.append(f"skipped {label}: {why}")
    log = result.get("meetnow_log")
    if log and log["lines"]:
        lines.append(f"meetnow's server wrote {log['lines']} log lines ({log['tracebacks']} tracebacks): {log['path']}")
    lines.append(f"criteria: {result['criteria']}; network: {result['network']}")
    load = result["load_average"]
    lines.append(f"load average (1/5/15 min): {' '.join(map(str, load['start']))} at the start, "
                 f"{' '.join(map(str, load['end']))} at the end")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two tiny rooms per server, a few seconds")
    parser.add_argument("--start", type=int, default=8, help="first room size")
    parser.add_argument("--step", type=int, default=2, help="room size increment")
    parser.add_argument("--max", type=int, default=32, help="largest room size tried")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per server before giving up")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per room")
    parser.add_argument("--max-latency", type=float, default=100.0,
                        help="largest median added video latency, ms, a room may have and still hold")
    servers.add_server_arguments(parser)
    parser.add_argument("--output", type=Path, default=results.RESULTS / "room_size.json")
    args = parser.parse_args(argv)
    args.receive_loss, args.profile = 0.0, None
    if args.quick:
        args.start, args.step, args.max = 2, 1, 3
        servers.quick(args)
    netns.enter_if_possible(veth=True, skip=args.no_netns, fallback="running on loopback, meetnow only")
    started = time.monotonic()
    result = asyncio.run(bench(args))
    results.report(result, args.output, table(result), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
