"""Forwarding benchmark: meetnow's SFU and Janus's videoroom under the same synthetic load.

Publishers send pre-encoded VP8 (640x480, 30 fps, ~500 kbit/s by default) and 20 ms Opus
in a loop; viewers count packets and frames (RTP marker bit) from the cleartext SRTP
header without decoding. Each server runs in its own process and its CPU, all threads,
is read from /proc: the run time of each thread (/proc/<pid>/task/*/schedstat, in ns), or
utime + stime from /proc/<pid>/stat (10 ms ticks, but counting threads that ended) when a
thread ended during the window. meetnow's SFU is driven over a JSON-lines
socket on 127.0.0.1; Janus (Debian's package, bench/janus.py) over its HTTP API, with a
configuration the script writes to a temporary folder. The servers, the synthetic load
and the measuring of one window are bench/harness/, shared with bench/room_size.py; this
script plans the rows, repeats them, and summarizes and compares the servers.

Both servers are measured in the same run, rows interleaved (the order of the servers
alternates from row to row), inside a private network namespace (bench/netns.py): Janus
never gathers candidates on loopback, so media goes to an address on a veth end in that
namespace, for both servers alike; the namespace has no other interface, so nothing can
leave the machine. Without root (no namespace) only meetnow runs, on 127.0.0.1.

Rows: one publisher with K viewers (K = 0 is the publisher-only baseline: what receiving
one publisher costs), and rooms of N where everyone publishes and watches everyone else.
``--at-once R`` runs R such rooms at once in every row (six rooms of four: ``--viewers
--rooms 4 --at-once 6``); ``--workers 1 2`` measures meetnow as the real ``meetnow serve``
with one and with two media worker processes (bench/harness/serve.py), each process's CPU
reported on its own.
"Forwarded packets" are the RTP packets (media and retransmissions) the viewers received
in the measured window, counted the same way for both servers. Latency is timed by
payload: both servers forward payloads byte for byte, so the publisher stamps each
payload as it sends it and the viewer, in the same process, looks it up; the same is
measured on a direct aiortc-to-aiortc path in the same run, and "added" is the
difference of the medians.

Run ``python bench/forwarding.py --help``. ``--quick`` runs one tiny configuration in a
few seconds (used by the test suite to keep this script working).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import janus, netns  # noqa: E402
from bench.harness import results, servers  # noqa: E402
from bench.harness.load import direct_latency  # noqa: E402
from bench.harness.results import fmt  # noqa: E402
from bench.harness.rows import Backend, Row, disturbed, run_room  # noqa: E402
from bench.synthetic import EncodedMedia, encoded_media  # noqa: E402


# --- the run -----------------------------------------------------------------------------

def plan_rows(viewers: list[int], rooms: list[int], at_once: int = 1) -> list[tuple[str, int, int]]:
    """(name, publishers, viewers) of every row: one publisher with K viewers, then full
    rooms; each row ``at_once`` times at once (publishers and viewers: per room)."""
    if at_once > 1:
        plan = [(f"{at_once} x (1 publisher, K={k})", 1, k) for k in viewers]
        return plan + [(f"{at_once} rooms of N={n}, all publish", n, 0) for n in rooms]
    plan = [(f"1 publisher, K={k}", 1, k) for k in viewers]
    plan += [(f"room N={n}, all publish", n, 0) for n in rooms]
    return plan


async def measure(backends: list[Backend], media: EncodedMedia, plan: list[tuple[str, int, int]],
                  args: argparse.Namespace) -> list[Row]:
    """Every row on every backend, ``args.repeat`` times; the servers' order alternates."""
    rows: list[Row] = []
    turn = 0
    for repeat in range(args.repeat):
        for index, (name, publishers, viewers) in enumerate(plan):
            order = backends if turn % 2 == 0 else list(reversed(backends))
            turn += 1
            for backend in order:
                for attempt in range(1 + args.retries):
                    row = await run_room(backend, media, name, f"r{repeat}-{index}-{attempt}", publishers, viewers,
                                         args.warmup, args.seconds, repeat, (args.quiet, args.quiet_wait),
                                         rooms=args.at_once)
                    rows.append(row)
                    note = f"; errors: {row.errors}" if row.errors else ""
                    if len(row.process_cpu_percent) > 1:
                        note = f"  ({by_process(row.process_cpu_percent)}){note}"
                    print(f"  {backend.label:22} {name:24} CPU {row.cpu_percent:5.1f}%  "
                          f"fps {row.fps:4.1f}  loss {row.loss_percent:.2f}%  other work {row.other_cpu_percent:3.0f}%"
                          f"{note}", file=sys.stderr, flush=True)
                    await asyncio.sleep(0.5)  # let the teardown settle before the next row
                    if not disturbed(row, args.quiet):
                        break
    return rows


_MEDIAN_FIELDS = [f.name for f in fields(Row) if f.type in ("float", "int", "float | None")
                  and f.name not in ("publishers", "legs", "repeat", "rooms")]


def by_process(percents: dict[str, float]) -> str:
    """Each server process's CPU, e.g. "front 2 / worker 0 41 / worker 1 43"."""
    return " / ".join(f"{label} {value:.0f}" for label, value in percents.items())


def summarize(rows: list[Row], direct: tuple[float | None, float | None], quiet: float) -> dict[str, list[dict]]:
    """Per server, one row per configuration: the median of its repeats (disturbed
    measurements left out when clean ones exist), with marginal figures against that
    server's publisher-only row."""
    out: dict[str, list[dict]] = {}
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = [r for r in rows if r.backend == backend]
        summary: list[dict] = []
        for name in dict.fromkeys(r.name for r in mine):
            group = [r for r in mine if r.name == name]
            good = ([r for r in group if not disturbed(r, quiet)]
                    or [r for r in group if not r.errors] or group)
            merged = asdict(good[0])
            merged.pop("repeat")
            for key in _MEDIAN_FIELDS:
                values = [getattr(r, key) for r in good if getattr(r, key) is not None]
                merged[key] = statistics.median(values) if values else None
            per_packet = [r.us_per_packet for r in good if r.us_per_packet]
            merged["us_per_packet_range"] = [min(per_packet), max(per_packet)] if per_packet else None
            for key in ("process_cpu_percent", "process_busiest_thread_percent"):
                labels = dict.fromkeys(label for r in good for label in getattr(r, key))
                merged[key] = {label: statistics.median(getattr(r, key)[label] for r in good
                                                        if label in getattr(r, key)) for label in labels}
            merged["repeats"] = len(good)
            merged["measured"] = len(group)
            merged["errors"] = [e for r in good for e in r.errors]
            merged["left_out"] = [{"repeat": r.repeat, "errors": r.errors, "other_cpu_percent": r.other_cpu_percent}
                                  for r in group if all(r is not g for g in good)]
            summary.append(merged)
        baseline = next((r for r in summary if r["publishers"] == 1 and r["legs"] == 0), None)
        for row in summary:
            if baseline is not None and row["legs"] and row["packets_forwarded"]:
                # ingest of the publishers: the baseline's per publisher, times all of this row's
                base_cpu = baseline["cpu_percent"] / baseline["rooms"] * row["publishers"] * row["rooms"]
                row["us_per_packet_marginal"] = (
                    1e4 * (row["cpu_percent"] - base_cpu) * row["seconds"] / row["packets_forwarded"])
                row["percent_per_leg"] = (row["cpu_percent"] - base_cpu) / row["legs"]
            if row["latency_video_ms"] is not None and direct[0] is not None:
                row["added_video_ms"] = row["latency_video_ms"] - direct[0]
            if row["latency_audio_ms"] is not None and direct[1] is not None:
                row["added_audio_ms"] = row["latency_audio_ms"] - direct[1]
        out[backend] = summary
    return out


def meetnow_labels(by_server: dict[str, list[dict]]) -> list[str]:
    """The meetnow servers of a run: its SFU process, or ``meetnow serve`` per worker count."""
    return [label for label in by_server if label.startswith("meetnow")]


def compare(by_server: dict[str, list[dict]], baseline: str) -> list[dict]:
    """Every meetnow server against ``baseline`` row by row: ratios of CPU per forwarded packet."""
    theirs = {r["name"]: r for r in by_server.get(baseline, [])}
    out = []
    for label in meetnow_labels(by_server):
        out += _compare_one(label, by_server[label], theirs, baseline)
    return out


def _compare_one(label: str, rows: list[dict], theirs: dict[str, dict], baseline: str) -> list[dict]:
    out = []
    for m in rows:
        name = m["name"]
        j = theirs.get(name)
        if j is None:
            continue
        entry = {"name": name, "server": label, "baseline": baseline,
                 "cpu_ratio": _ratio(m["cpu_percent"], j["cpu_percent"]),
                 "us_per_packet_ratio": _ratio(m["us_per_packet"], j["us_per_packet"]),
                 "us_per_packet_marginal_ratio": _ratio(m["us_per_packet_marginal"], j["us_per_packet_marginal"]),
                 "added_video_ms_difference": _diff(m["added_video_ms"], j["added_video_ms"]),
                 "added_audio_ms_difference": _diff(m["added_audio_ms"], j["added_audio_ms"])}
        out.append(entry)
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


async def bench(args: argparse.Namespace) -> dict:
    address = servers.media_address()
    media = encoded_media(args.width, args.height, fps=args.fps, bitrate=args.bitrate, seconds=args.loop)
    skipped: dict[str, str] = {}
    backends = await servers.start_backends(args, address, skipped)
    load_at_start = os.getloadavg()
    try:
        direct_video, direct_audio = await direct_latency(media, min(args.seconds, 5.0), address)
        rows = await measure(backends, media, plan_rows(args.viewers, args.rooms, args.at_once), args)
    finally:
        for backend in backends:
            await backend.close()
    by_server = summarize(rows, (direct_video, direct_audio), args.quiet)
    baseline = next((b.label for b in backends if not b.label.startswith("meetnow")), None)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": results.machine(),
        "network": netns.describe(address),
        "janus_version": janus.janus_version(),
        "load": {
            "video": f"VP8 {args.width}x{args.height} {args.fps} fps",
            "video_bitrate_measured": round(media.video_bitrate),
            "audio": "Opus 20 ms",
            "receive_loss": args.receive_loss,
            "seconds_per_row": args.seconds,
            "repeats": args.repeat,
            "rooms_at_once": args.at_once,
            "workers": args.workers,
        },
        # the machine's load average (1, 5, 15 min) when the run began and ended: other
        # people's work on a shared machine
        "load_average": {"start": [round(v, 2) for v in load_at_start],
                         "end": [round(v, 2) for v in os.getloadavg()]},
        "direct_latency_ms": {"video": direct_video, "audio": direct_audio},
        "fit_us_per_packet_one_publisher": {
            label: _fit_us_per_packet([r for r in summary if r["publishers"] == 1])
            for label, summary in by_server.items()
        },
        "skipped": skipped,
        "meetnow_log": servers.server_log_summary(backends),
        # meetnow's rows (as before the comparison existed), every server's, the ratios,
        # and every single measurement
        "rows": by_server.get("meetnow", []) or next((by_server[m] for m in meetnow_labels(by_server)), []),
        "servers": by_server,
        "comparison": compare(by_server, baseline) if baseline else [],
        "measurements": [asdict(r) for r in rows],
    }


def _fit_us_per_packet(rows: list[dict]) -> float | None:
    """Least-squares slope of server CPU against forwarded packets over the K rows."""
    points = [(r["packets_forwarded"] / r["seconds"], r["cpu_percent"] / 100) for r in rows if r["seconds"]]
    if len(points) < 2:
        return None
    mx = statistics.mean(x for x, _ in points)
    my = statistics.mean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if not sxx:
        return None
    return 1e6 * sum((x - mx) * (y - my) for x, y in points) / sxx


def table(result: dict) -> str:
    by_server = result["servers"]
    # each process of the server on its own, when one has several (the front and its workers)
    several = any(len(r.get("process_cpu_percent") or {}) > 1 for rows in by_server.values() for r in rows)
    head = ("row", "server", "CPU %", *(("CPU by process %",) if several else ()), "us/pkt (range)",
            "us/pkt marg.", "% core/leg", "fps", "loss %", "added v/a ms", "busiest thread %", "client CPU %",
            "other work %")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = list(dict.fromkeys(r["name"] for rows in by_server.values() for r in rows))
    for name in names:
        for label, rows in by_server.items():
            r = next((r for r in rows if r["name"] == name), None)
            if r is None:
                continue
            spread = r.get("us_per_packet_range")
            per_packet = fmt(r["us_per_packet"] or None, ".1f")
            if spread and r["repeats"] > 1:
                per_packet += f" ({spread[0]:.1f}-{spread[1]:.1f})"
            lines.append("| " + " | ".join([
                name,
                label,
                fmt(r["cpu_percent"], ".1f"),
                *((by_process(r.get("process_cpu_percent") or {}),) if several else ()),
                per_packet,
                fmt(r["us_per_packet_marginal"], ".1f"),
                fmt(r["percent_per_leg"], ".2f"),
                fmt(r["fps"] if r["legs"] else None, ".1f"),
                fmt(r["loss_percent"] if r["legs"] else None, ".2f"),
                f"{fmt(r['added_video_ms'], '.1f')} / {fmt(r['added_audio_ms'], '.1f')}",
                fmt(r["busiest_thread_percent"], ".0f"),
                fmt(r["client_cpu_percent"], ".0f"),
                fmt(r["other_cpu_percent"], ".0f"),
            ]) + " |" + (" errors!" if r["errors"] else "")
                + (" (viewers dropped datagrams)" if r["client_udp_drops"] else "")
                + (" (disturbed by other work)" if r["other_cpu_percent"] > 50 else ""))
    if result["comparison"]:
        base = result["comparison"][0]["baseline"]
        lines.append(f"\nmeetnow / {base}:")
        lines.append("| row | server | CPU ratio | per forwarded packet | marginal per packet "
                     "| added latency v/a, ms more |")
        lines.append("|---|---|---|---|---|---|")
        for c in result["comparison"]:
            lines.append(f"| {c['name']} | {c['server']} | {fmt(c['cpu_ratio'], '.2f')} | "
                         f"{fmt(c['us_per_packet_ratio'], '.2f')} | "
                         f"{fmt(c['us_per_packet_marginal_ratio'], '.2f')} | "
                         f"{fmt(c['added_video_ms_difference'], '+.1f')} / {fmt(c['added_audio_ms_difference'], '+.1f')} |")
    for label, fit in result["fit_us_per_packet_one_publisher"].items():
        if fit is not None:
            lines.append(f"\n{label}: fit over the one-publisher rows: {fit:.1f} us of server CPU per forwarded packet")
    d = result["direct_latency_ms"]
    lines.append(f"\ndirect aiortc-to-aiortc latency p50: video {fmt(d['video'], '.1f')} ms, audio {fmt(d['audio'], '.1f')} ms")
    lines.append(f"network: {result['network']}")
    load = result["load_average"]
    lines.append(f"load average (1/5/15 min): {' '.join(map(str, load['start']))} at the start, "
                 f"{' '.join(map(str, load['end']))} at the end")
    for label, why in result["skipped"].items():
        lines.append(f"skipped {label}: {why}")
    log = result.get("meetnow_log")
    if log and log["lines"]:
        lines.append(f"meetnow's server wrote {log['lines']} log lines ({log['tracebacks']} tracebacks): {log['path']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Needs root for the network namespace (Janus cannot run without it) and "
                                            "Debian's janus package for the baseline.")
    parser.add_argument("--quick", action="store_true", help="one tiny configuration, a few seconds")
    parser.add_argument("--viewers", type=int, nargs="*", default=[0, 1, 4, 9, 16], help="K values (0 = baseline)")
    parser.add_argument("--rooms", type=int, nargs="*", default=[4, 8, 12, 16], help="N values (everyone publishes)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per row")
    parser.add_argument("--repeat", type=int, default=2, help="measure every row this many times")
    parser.add_argument("--retries", type=int, default=1,
                        help="measure a row again when it failed or other work took over twice --quiet")
    servers.add_server_arguments(parser)
    parser.add_argument("--receive-loss", type=float, default=0.0, help="server-side receive loss (test hook)")
    parser.add_argument("--output", type=Path, default=results.RESULTS / "forwarding.json")
    parser.add_argument("--profile", type=Path, help="write a cProfile of meetnow's server process to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.viewers, args.rooms, args.repeat = [0, 1], [], 1
        servers.quick(args)
    netns.enter_if_possible(veth=True, skip=args.no_netns, fallback="running on loopback, meetnow only")
    started = time.monotonic()
    result = asyncio.run(bench(args))
    results.report(result, args.output, table(result), started)
    return 1 if any(r["errors"] for rows in result["servers"].values() for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
