"""Forwarding benchmark: meetnow's SFU in its own process, synthetic aiortc peers around it.

Publishers send pre-encoded VP8 (640x480, 30 fps, ~500 kbit/s by default) and 20 ms Opus
in a loop; viewers count packets and frames (RTP marker bit) without decoding. The SFU
runs in a child process so its CPU (all threads) is read from /proc/<pid>/stat; the
benchmark talks to it over a JSON-lines socket on 127.0.0.1. All media stays on
loopback.

Rows: one publisher with K viewers (K = 0 is the publisher-only baseline), and rooms of
N where everyone publishes. Latency is timed by payload: the server forwards payloads
byte for byte, so the publisher stamps each payload it sends and the viewer, in the same
process, looks it up; the same is measured on a direct aiortc-to-aiortc path in the same
run, and "added" is the difference of the medians.

Run ``python bench/forwarding.py --help``. ``--quick`` runs one tiny configuration in a
few seconds (used by the test suite to keep this script working).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the server process ----------------------------------------------------------------


async def serve(receive_loss: float) -> None:
    """Run an Sfu and a JSON-lines control socket on 127.0.0.1; print the port."""
    from meeting.config import MediaConfig
    from meeting.sfu import Offer, Sfu

    sfu = Sfu(
        MediaConfig(announce_addresses=("127.0.0.1",), allowed_peer_networks=("127.0.0.0/8",), max_participants=64),
        receive_loss=receive_loss,
    )
    done = asyncio.Event()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lock = asyncio.Lock()

        async def send(message: dict) -> None:
            async with lock:
                writer.write(json.dumps(message).encode() + b"\n")
                await writer.drain()

        peers: dict[tuple[str, str], Any] = {}
        while True:
            line = await reader.readline()
            if not line:
                break
            msg = json.loads(line)
            op = msg["op"]
            try:
                if op == "join":
                    room, pid = msg["room"], msg["pid"]

                    async def send_offer(offer: Offer, room: str = room, pid: str = pid) -> None:
                        await send({"op": "offer", "room": room, "pid": pid, "sdp": offer.sdp,
                                    "slots": [asdict(s) for s in offer.slots]})

                    peers[(room, pid)] = await sfu.join(room, pid, send_offer, publish=msg["publish"])
                    await send({"op": "ok", "id": msg["id"]})
                elif op == "answer":
                    peer = peers.get((msg["room"], msg["pid"]))
                    if peer is not None:  # else it left while its answer was on the way
                        await peer.accept_answer(msg["sdp"])
                elif op == "leave":
                    await sfu.leave(msg["room"], msg["pid"])
                    peers.pop((msg["room"], msg["pid"]), None)
                    await send({"op": "ok", "id": msg["id"]})
                elif op == "stats":
                    stats = sfu.stats(detail=True, reset_peaks=msg.get("reset_peaks", False))
                    await send({"op": "ok", "id": msg["id"], "stats": stats})
                elif op == "quit":
                    await sfu.close()
                    await send({"op": "ok", "id": msg["id"]})
                    done.set()
                    break
            except Exception as exc:  # reported to the benchmark, which fails the row
                await send({"op": "error", "id": msg.get("id"), "error": repr(exc)})
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    await done.wait()
    server.close()


# --- the benchmark process -------------------------------------------------------------


def udp_receive_buffer_errors() -> int:
    """The kernel's count of UDP datagrams dropped for a full receive buffer (all sockets)."""
    lines = Path("/proc/net/snmp").read_text().splitlines()
    names, values = [line.split()[1:] for line in lines if line.startswith("Udp:")][:2]
    return int(dict(zip(names, values))["RcvbufErrors"])


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Control:
    """The benchmark's end of the control socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future] = {}
        self.participants: dict[tuple[str, str], Any] = {}
        self.errors: list[str] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        from meeting.sfu import Offer, TrackSlot

        while True:
            line = await self.reader.readline()
            if not line:
                return
            msg = json.loads(line)
            if msg["op"] == "offer":
                person = self.participants[(msg["room"], msg["pid"])]
                await person.send_offer(Offer(sdp=msg["sdp"], slots=tuple(TrackSlot(**s) for s in msg["slots"])))
            elif msg["op"] == "error":
                self.errors.append(msg["error"])
                future = self.waiting.pop(msg.get("id"), None)
                if future is not None and not future.done():
                    future.set_exception(RuntimeError(msg["error"]))
            else:
                future = self.waiting.pop(msg["id"], None)
                if future is not None and not future.done():
                    future.set_result(msg)

    async def request(self, op: str, **kw: Any) -> dict:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        self.writer.write(json.dumps({"op": op, "id": self.next_id, **kw}).encode() + b"\n")
        await self.writer.drain()
        return await asyncio.wait_for(future, 30)

    def send(self, op: str, **kw: Any) -> None:
        self.writer.write(json.dumps({"op": op, **kw}).encode() + b"\n")


class RemotePeer:
    """Stands in for meeting.sfu.Peer on the benchmark side of the control socket."""

    def __init__(self, control: Control, room: str, pid: str) -> None:
        self.control = control
        self.room = room
        self.pid = pid

    async def accept_answer(self, sdp: str) -> None:
        self.control.send("answer", room=self.room, pid=self.pid, sdp=sdp)


@dataclass
class Row:
    name: str
    publishers: int
    legs: int  # viewer legs: one viewer receiving one publisher (audio + video)
    seconds: float = 0.0
    cpu_percent: float = 0.0
    packets_forwarded: int = 0
    us_per_packet: float = 0.0
    us_per_packet_marginal: float | None = None
    percent_per_leg: float | None = None
    fps: float = 0.0
    loss_percent: float = 0.0
    latency_video_ms: float | None = None
    latency_audio_ms: float | None = None
    added_video_ms: float | None = None
    added_audio_ms: float | None = None
    server: dict = field(default_factory=dict)  # the SFU's counters over the window
    packets_sent: int = 0  # by the publishers, in the window
    kernel_udp_drops: int = 0  # datagrams the kernel dropped (full socket buffers), whole machine
    client_cpu_percent: float = 0.0  # the benchmark's own process (all synthetic peers)
    load_average: float = 0.0  # 1-minute load average at the end of the window
    errors: list[str] = field(default_factory=list)


async def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def p50(samples: list[float]) -> float | None:
    return statistics.median(samples) * 1000 if samples else None


async def run_room(
    control: Control,
    server_pid: int,
    media: Any,
    name: str,
    room: str,
    publishers: int,
    viewers: int,
    warmup: float,
    seconds: float,
) -> Row:
    """Join ``publishers`` publishing and ``viewers`` viewing-only participants; measure."""
    from meeting.synthetic import LatencyStamps, SyntheticParticipant

    stamps = LatencyStamps()
    control.errors.clear()
    people: list[SyntheticParticipant] = []
    sent: dict[str, int] = {}
    try:
        for i in range(publishers + viewers):
            pid = f"p{i}" if i < publishers else f"v{i}"
            person = SyntheticParticipant(pid, media, decode=False, stamps=stamps)
            person.peer = RemotePeer(control, room, pid)
            control.participants[(room, pid)] = person
            people.append(person)
            await control.request("join", room=room, pid=pid, publish=["mic", "camera"] if i < publishers else [])
        pubs = [p.name for p in people[:publishers]]
        legs = [(v, p) for v in people for p in pubs if p != v.name]

        def all_flowing() -> bool:
            return all(v.frames_from(p, "camera") > 0 and v.frames_from(p, "mic") > 0 for v, p in legs)

        await wait_until(all_flowing, 30, f"media on every leg of {name}")
        await asyncio.sleep(warmup)  # let rates settle before measuring

        def snapshot() -> dict:
            # per leg: video frames, and packets expected and received by sequence number
            out = {}
            for v, p in legs:
                camera, mic = v.stream_from(p, "camera"), v.stream_from(p, "mic")
                out[(v.name, p)] = (
                    camera.frames,
                    camera.sequence.expected + mic.sequence.expected,
                    camera.sequence.received + mic.sequence.received,
                )
            return out

        sent_before = {p.name: _sent_packets(p) for p in people[:publishers]}
        frames_before = snapshot()
        stats_before = (await control.request("stats", reset_peaks=True))["stats"]
        totals_before = stats_before["totals"]
        for samples in stamps.samples.values():
            samples.clear()
        cpu_before = process_cpu_seconds(server_pid)
        client_before = process_cpu_seconds(os.getpid())
        kernel_drops = udp_receive_buffer_errors()
        started = time.monotonic()
        await asyncio.sleep(seconds)
        cpu_after = process_cpu_seconds(server_pid)
        client_after = process_cpu_seconds(os.getpid())
        kernel_drops = udp_receive_buffer_errors() - kernel_drops
        elapsed = time.monotonic() - started
        stats_after = (await control.request("stats"))["stats"]
        totals_after = stats_after["totals"]
        frames_after = snapshot()
        sent_after = {p.name: _sent_packets(p) for p in people[:publishers]}

        row = Row(name=name, publishers=publishers, legs=len(legs), seconds=round(elapsed, 2))
        row.cpu_percent = 100 * (cpu_after - cpu_before) / elapsed
        row.kernel_udp_drops = kernel_drops
        row.client_cpu_percent = 100 * (client_after - client_before) / elapsed
        row.load_average = os.getloadavg()[0]
        row.packets_sent = sum(sent_after[p] - sent_before[p] for p in sent_after)
        row.server = {
            k: v - totals_before.get(k, 0)
            for k, v in totals_after.items()
            if k not in ("rooms", "participants", "loop_lag_ms_max")
        }
        row.server["loop_lag_ms_max"] = totals_after["loop_lag_ms_max"]
        row.packets_forwarded = row.server["packets_forwarded"]
        if row.packets_forwarded:
            row.us_per_packet = 1e6 * (cpu_after - cpu_before) / row.packets_forwarded
        if legs:
            fps = [(frames_after[k][0] - frames_before[k][0]) / elapsed for k in frames_after]
            row.fps = statistics.mean(fps)
            # Sequence numbers seen by the viewers: robust to counting windows that start
            # and end a few packets apart on the two sides of the server.
            expected = sum(frames_after[k][1] - frames_before[k][1] for k in frames_after)
            got = sum(frames_after[k][2] - frames_before[k][2] for k in frames_after)
            row.loss_percent = max(0.0, 100 * (1 - got / expected)) if expected else 0.0
        row.latency_video_ms = p50(stamps.samples["video"])
        row.latency_audio_ms = p50(stamps.samples["audio"])
        row.errors = list(control.errors)
        return row
    finally:
        for person in people:
            await control.request("leave", room=room, pid=person.name)
            control.participants.pop((room, person.name), None)
            await person.close()


def _sent_packets(person: Any) -> int:
    total = 0
    for transceiver in person.pc.getTransceivers():
        total += transceiver.sender._RTCRtpSender__packet_count
    return total


async def direct_latency(media: Any, seconds: float) -> tuple[float | None, float | None]:
    """Median latency publisher -> viewer over a direct aiortc connection (no server)."""
    from meeting.sfu import Offer, TrackSlot
    from meeting.synthetic import LatencyStamps, SyntheticParticipant

    stamps = LatencyStamps()
    publisher = SyntheticParticipant("pub", media, decode=False, stamps=stamps)
    viewer = SyntheticParticipant("view", media, decode=False, stamps=stamps)
    try:
        # The publisher offers its two tracks; the viewer answers as a receiver.
        for source in ("mic", "camera"):
            publisher.pc.addTrack(publisher.tracks[source])
        from meeting.ice import apply_ice_policy, ice_connections

        for connection in ice_connections(publisher.pc):
            apply_ice_policy(connection, ("127.0.0.1",), publisher._policy)
        await publisher.pc.setLocalDescription(await publisher.pc.createOffer())
        publisher._hook_transport()
        mids = [t.mid for t in publisher.pc.getTransceivers()]
        slots = tuple(
            TrackSlot(mid=mid, kind=kind, source=source, direction="receive", participant="pub")
            for mid, kind, source in zip(mids, ("audio", "video"), ("mic", "camera"))
        )
        answer = await viewer.answer(Offer(sdp=publisher.pc.localDescription.sdp, slots=slots))
        from aiortc import RTCSessionDescription

        await publisher.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await wait_until(lambda: viewer.frames_from("pub", "camera") > 10, 20, "direct media")
        for samples in stamps.samples.values():
            samples.clear()
        await asyncio.sleep(seconds)
        return p50(stamps.samples["video"]), p50(stamps.samples["audio"])
    finally:
        await publisher.close()
        await viewer.close()


async def bench(args: argparse.Namespace) -> dict:
    from meeting.synthetic import encoded_media

    media = encoded_media(args.width, args.height, fps=args.fps, bitrate=args.bitrate, seconds=args.loop)
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", "--receive-loss", str(args.receive_loss)]
        + (["--profile", str(args.profile)] if args.profile else []),
        stdout=subprocess.PIPE,
        cwd=str(ROOT),
    )
    try:
        port = int(server.stdout.readline())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        control = Control(reader, writer)
        direct_video, direct_audio = await direct_latency(media, min(args.seconds, 5.0))
        rows: list[Row] = []
        plan: list[tuple[str, int, int]] = []
        for k in args.viewers:
            plan.append((f"1 publisher, K={k}", 1, k))
        for n in args.rooms:
            plan.append((f"room N={n}, all publish", n, 0))
        for index, (name, publishers, viewers) in enumerate(plan):
            row = await run_room(
                control, server.pid, media, name, f"room{index}", publishers, viewers, args.warmup, args.seconds
            )
            rows.append(row)
            print(f"  measured {name}: {row.cpu_percent:.1f}% CPU", file=sys.stderr, flush=True)
        baseline = next((r for r in rows if r.publishers == 1 and r.legs == 0), None)
        for row in rows:
            if baseline is not None and row.legs and row.packets_forwarded:
                base_cpu = baseline.cpu_percent * row.publishers  # ingest cost of the publishers
                row.us_per_packet_marginal = (
                    1e4 * (row.cpu_percent - base_cpu) * row.seconds / row.packets_forwarded
                )
                row.percent_per_leg = (row.cpu_percent - base_cpu) / row.legs
            if row.latency_video_ms is not None and direct_video is not None:
                row.added_video_ms = row.latency_video_ms - direct_video
            if row.latency_audio_ms is not None and direct_audio is not None:
                row.added_audio_ms = row.latency_audio_ms - direct_audio
        fit = _fit_us_per_packet([r for r in rows if r.publishers == 1])
        await control.request("quit")
        control.task.cancel()
        writer.close()
        return {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "load": {
                "video": f"VP8 {args.width}x{args.height} {args.fps} fps",
                "video_bitrate_measured": round(media.video_bitrate),
                "audio": "Opus 20 ms",
                "receive_loss": args.receive_loss,
            },
            "direct_latency_ms": {"video": direct_video, "audio": direct_audio},
            "fit_us_per_packet_one_publisher": fit,
            "rows": [asdict(r) for r in rows],
        }
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _fit_us_per_packet(rows: list[Row]) -> float | None:
    """Least-squares slope of server CPU against forwarded packets over the K rows."""
    points = [(r.packets_forwarded / r.seconds, r.cpu_percent / 100) for r in rows if r.seconds]
    if len(points) < 2:
        return None
    mx = statistics.mean(x for x, _ in points)
    my = statistics.mean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if not sxx:
        return None
    return 1e6 * sum((x - mx) * (y - my) for x, y in points) / sxx


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(result: dict) -> str:
    head = ("row", "CPU %", "us/pkt", "us/pkt marg.", "% core/leg", "fps", "loss %", "lat. v/a ms", "added v/a ms")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["name"],
                    fmt(r["cpu_percent"], ".1f"),
                    fmt(r["us_per_packet"] or None, ".1f"),
                    fmt(r["us_per_packet_marginal"], ".1f"),
                    fmt(r["percent_per_leg"], ".2f"),
                    fmt(r["fps"] if r["legs"] else None, ".1f"),
                    fmt(r["loss_percent"] if r["legs"] else None, ".2f"),
                    f"{fmt(r['latency_video_ms'], '.1f')} / {fmt(r['latency_audio_ms'], '.1f')}",
                    f"{fmt(r['added_video_ms'], '.1f')} / {fmt(r['added_audio_ms'], '.1f')}",
                ]
            )
            + " |"
        )
    if result.get("fit_us_per_packet_one_publisher") is not None:
        lines.append(f"\nfit over the one-publisher rows: {result['fit_us_per_packet_one_publisher']:.1f} us of server CPU per forwarded packet")
    d = result["direct_latency_ms"]
    lines.append(f"\ndirect aiortc-to-aiortc latency p50: video {fmt(d['video'], '.1f')} ms, audio {fmt(d['audio'], '.1f')} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one tiny configuration, a few seconds")
    parser.add_argument("--viewers", type=int, nargs="*", default=[0, 1, 4, 9, 16], help="K values (0 = baseline)")
    parser.add_argument("--rooms", type=int, nargs="*", default=[2, 4, 8, 16], help="N values (everyone publishes)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of media before measuring")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=500_000, help="target VP8 bitrate, bit/s")
    parser.add_argument("--loop", type=float, default=4.0, help="seconds of pre-encoded media, sent in a loop")
    parser.add_argument("--receive-loss", type=float, default=0.0, help="server-side receive loss (test hook)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "forwarding.json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the server process to this file")
    args = parser.parse_args(argv)
    if args.serve:
        if args.profile:
            import cProfile

            cProfile.runctx("asyncio.run(serve(args.receive_loss))", globals(), {"args": args}, str(args.profile))
        else:
            asyncio.run(serve(args.receive_loss))
        return 0
    if args.quick:
        args.viewers, args.rooms = [0, 1], []
        args.seconds, args.warmup, args.loop = 1.0, 0.2, 2.0
        args.width, args.height, args.bitrate = 320, 240, 300_000
    started = time.monotonic()
    result = asyncio.run(bench(args))
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\nwritten to {args.output} ({result['wall_seconds']} s)")
    return 1 if any(r["errors"] for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
