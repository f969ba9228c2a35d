"""Recording benchmark: composition speed, and what recording costs the forwarding server.

Two parts, both with synthetic media (pre-encoded VP8 and 20 ms Opus in a loop; nothing
leaves loopback):

1. Composition: per-track files like the recorder writes (one camera and one mic per
   person, optionally a screen share) are composed into the one MP4 by
   ``meeting.recording.compose.compose`` in a worker process at low priority, as the server does.
   Speed is media seconds per wall second ("x real time"); CPU counts every thread of
   the worker (x264 encodes on several).
2. Forwarding CPU: meetnow's SFU in its own process (driven over a JSON-lines socket on
   127.0.0.1, as bench/forwarding.py does), a room of N publishers who all view each
   other, server CPU (all threads, from /proc) measured in alternating windows with the
   room's recorder off and on. "on" includes the recorder's writer thread (reordering,
   depacketizing, muxing to disk) as well as the tap on the event loop.

Run ``python bench/recording.py --help``. ``--quick`` runs tiny configurations in about
twenty seconds (used by the test suite to keep this script working).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- composition -------------------------------------------------------------------------


def write_tracks(folder: Path, people: int, seconds: float, screen: bool, width: int, height: int,
                 bitrate: int) -> None:
    """Per-track files and a manifest as the recorder leaves them, from pre-encoded media."""
    import av

    from bench.synthetic import encoded_media

    media = encoded_media(width, height, fps=30, bitrate=bitrate, seconds=4.0)
    ms = Fraction(1, 1000)
    lines = []
    number = 0
    sources = [(f"p{i}", source) for i in range(people) for source in ("mic", "camera")]
    if screen:
        sources.append(("p0", "screen"))
    for participant, source in sources:
        number += 1
        kind = "audio" if source == "mic" else "video"
        name = f"t{number:02d}-{source}.webm"
        with av.open(str(folder / name), "w", format="webm") as container:
            if kind == "video":
                stream = container.add_stream("vp8", rate=30)
                stream.width, stream.height = media.width, media.height
                frames, step, keys = media.video, 1000 / 30, media.video_keyframes
            else:
                stream = container.add_stream("opus", rate=48000)
                stream.layout = "stereo"
                frames, step, keys = media.audio, 20.0, (True,) * len(media.audio)
            stream.time_base = ms
            for i in range(int(seconds * 1000 / step)):
                packet = av.Packet(frames[i % len(frames)])
                packet.stream = stream
                packet.time_base = ms
                packet.pts = packet.dts = round(i * step)
                packet.is_keyframe = keys[i % len(frames)]
                container.mux(packet)
        lines.append({"track": number, "file": name, "levels": None, "participant": participant,
                      "name": participant.upper(), "source": source, "kind": kind, "start": 0.0})
    lines.append({"stopped": seconds})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def timed_compose(folder: str, span: float, preset: str) -> tuple[dict, float]:
    """Runs in the worker: compose, and the worker's CPU seconds (all threads) it took."""
    from meeting.recording.compose import ComposeSettings, compose

    cpu = time.process_time()
    result = compose(folder, span=span, key="bench", settings=ComposeSettings(preset=preset))
    return result.as_dict(), time.process_time() - cpu


@dataclass
class ComposeRow:
    name: str
    people: int
    screen: bool
    media_seconds: float
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    speed: float = 0.0  # x real time
    cpu_per_media_second: float = 0.0
    output_bytes: int = 0
    load_average: float = 0.0  # 1-minute load average after the row: other work slows a niced worker


def bench_compose(args: argparse.Namespace, workdir: Path) -> list[ComposeRow]:
    from meeting.recording.worker import init_worker

    import multiprocessing

    rows = []
    plan = [(f"compose, {n} people" + (" + screen share" if screen else ""), n, screen)
            for n, screen in args.compose]
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=init_worker, initargs=(30,)) as pool:
        pool.submit(int, 0).result()  # the worker is up before anything is timed
        for name, people, screen in plan:
            folder = workdir / f"compose-{people}-{int(screen)}"
            folder.mkdir()
            write_tracks(folder, people, args.media_seconds, screen, args.width, args.height, args.bitrate)
            started = time.monotonic()
            result, cpu = pool.submit(timed_compose, str(folder), args.media_seconds, args.preset).result()
            wall = time.monotonic() - started
            row = ComposeRow(name, people, screen, args.media_seconds, round(wall, 2), round(cpu, 2))
            row.speed = round(args.media_seconds / wall, 2)
            row.cpu_per_media_second = round(cpu / args.media_seconds, 3)
            row.output_bytes = result["size"]
            row.load_average = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(f"  measured {name}: {row.speed:.1f}x real time", file=sys.stderr, flush=True)
            shutil.rmtree(folder)
    return rows


# --- forwarding with and without a recording: the server process --------------------------


async def serve(folder: str) -> None:
    """Run an Sfu with a JSON-lines control socket on 127.0.0.1; print the port."""
    from dataclasses import asdict as as_dict

    from meeting.config import MediaConfig
    from meeting.recording.capture import RoomRecorder
    from meeting.media.peer import Offer
    from meeting.media.sfu import Sfu

    sfu = Sfu(MediaConfig(announce_addresses=("127.0.0.1",), allowed_peer_networks=("127.0.0.0/8",),
                          max_participants=64))
    recorders: dict[str, Any] = {}
    made = [0]  # recordings so far: each gets its own folder
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
                                    "slots": [as_dict(s) for s in offer.slots]})

                    peers[(room, pid)] = await sfu.open(room).join(pid, send_offer, publish=msg["publish"])
                    await send({"op": "ok", "id": msg["id"]})
                elif op == "answer":
                    peer = peers.get((msg["room"], msg["pid"]))
                    if peer is not None:
                        await peer.accept_answer(msg["sdp"])
                elif op == "record":
                    made[0] += 1
                    path = Path(folder) / f"{msg['room']}-{made[0]}"
                    path.mkdir(parents=True)
                    recorder = RoomRecorder(path, lambda pid: pid, "bench")
                    recorder.start()
                    recorders[msg["room"]] = recorder
                    sfu.open(msg["room"]).observe(recorder)
                    await send({"op": "ok", "id": msg["id"]})
                elif op == "stop-recording":
                    sfu.open(msg["room"]).unobserve()
                    summary = await asyncio.to_thread(recorders.pop(msg["room"]).close)
                    await send({"op": "ok", "id": msg["id"], "summary": as_dict(summary)})
                elif op == "stats":
                    await send({"op": "ok", "id": msg["id"], "stats": sfu.stats(reset_peaks=msg.get("reset_peaks", False))})
                elif op == "quit":
                    await sfu.close()
                    await send({"op": "ok", "id": msg["id"]})
                    done.set()
                    break
            except Exception as exc:
                await send({"op": "error", "id": msg.get("id"), "error": repr(exc)})
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await done.wait()
    server.close()


# --- forwarding: the benchmark side ---------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads (ended ones included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_run_seconds(pid: int) -> dict[int, float]:
    """Time on CPU of each live thread (schedstat, ns precision)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass
    return out


class Control:
    """The benchmark's end of the control socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future] = {}
        self.participants: dict[tuple[str, str], Any] = {}
        self.errors: list[str] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        from meeting.media.peer import Offer, TrackSlot

        while True:
            line = await self.reader.readline()
            if not line:
                return
            msg = json.loads(line)
            if msg["op"] == "offer":
                person = self.participants[(msg["room"], msg["pid"])]
                await person.send_offer(Offer(sdp=msg["sdp"], slots=tuple(TrackSlot(**s) for s in msg["slots"])))
                continue
            future = self.waiting.pop(msg.get("id"), None)
            if msg["op"] == "error":
                self.errors.append(msg["error"])
                if future is not None and not future.done():
                    future.set_exception(RuntimeError(msg["error"]))
            elif future is not None and not future.done():
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
    def __init__(self, control: Control, room: str, pid: str) -> None:
        self.control, self.room, self.pid = control, room, pid

    async def accept_answer(self, sdp: str) -> None:
        self.control.send("answer", room=self.room, pid=self.pid, sdp=sdp)


@dataclass
class ForwardingRow:
    name: str
    recording: bool
    people: int
    windows: int = 0
    seconds: float = 0.0
    cpu_percent: float = 0.0  # server, all threads, % of one core (mean over windows)
    cpu_percent_windows: list[float] = field(default_factory=list)
    packets_forwarded_per_s: float = 0.0
    fps: float = 0.0  # video frames per second each viewer got from each publisher
    loss_percent: float = 0.0
    loop_lag_ms_max: int = 0
    bytes_written: int = 0
    load_average: float = 0.0


async def wait_until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def bench_forwarding(args: argparse.Namespace, workdir: Path) -> list[ForwardingRow]:
    from bench.synthetic import SyntheticParticipant, encoded_media

    media = encoded_media(args.width, args.height, fps=30, bitrate=args.bitrate, seconds=4.0)
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(workdir / "sfu")],
                              stdout=subprocess.PIPE, cwd=str(ROOT))
    room = "room"
    people: list[SyntheticParticipant] = []
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        control = Control(reader, writer)
        for i in range(args.people):
            person = SyntheticParticipant(f"p{i}", media, decode=False)
            person.peer = RemotePeer(control, room, person.name)
            control.participants[(room, person.name)] = person
            people.append(person)
            await control.request("join", room=room, pid=person.name, publish=["mic", "camera"])
        legs = [(v, p) for v in people for p in people if p is not v]
        await wait_until(lambda: all(v.frames_from(p.name, "camera") > 0 and v.frames_from(p.name, "mic") > 0
                                     for v, p in legs), 30, "media on every leg")
        await asyncio.sleep(args.warmup)  # rates settle before measuring
        rows = {False: ForwardingRow(f"forwarding, {args.people} people, recording off", False, args.people),
                True: ForwardingRow(f"forwarding, {args.people} people, recording on", True, args.people)}
        samples: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.repeats):
            for recording in (False, True):
                if recording:
                    await control.request("record", room=room)
                    await asyncio.sleep(args.warmup)  # the keyframes asked for at the start pass
                samples[recording].append(await _window(control, server.pid, legs, args.seconds))
                if recording:
                    summary = (await control.request("stop-recording", room=room))["summary"]
                    samples[recording][-1]["bytes"] = summary["bytes"]
        for recording, row in rows.items():
            windows = samples[recording]
            row.windows = len(windows)
            row.seconds = round(sum(w["seconds"] for w in windows), 2)
            row.cpu_percent_windows = [round(w["cpu_percent"], 1) for w in windows]
            row.cpu_percent = round(statistics.mean(w["cpu_percent"] for w in windows), 1)
            row.packets_forwarded_per_s = round(statistics.mean(w["forwarded_per_s"] for w in windows), 1)
            row.fps = round(statistics.mean(w["fps"] for w in windows), 1)
            row.loss_percent = round(statistics.mean(w["loss"] for w in windows), 2)
            row.loop_lag_ms_max = max(w["lag"] for w in windows)
            row.bytes_written = sum(w.get("bytes", 0) for w in windows)
            row.load_average = round(os.getloadavg()[0], 2)
        await control.request("quit")
        control.task.cancel()
        writer.close()
        if control.errors:
            raise RuntimeError(f"server errors: {control.errors}")
        return [rows[False], rows[True]]
    finally:
        for person in people:
            await person.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def _window(control: Control, pid: int, legs: list, seconds: float) -> dict:
    def snapshot() -> dict:
        out = {}
        for v, p in legs:
            camera, mic = v.stream_from(p.name, "camera"), v.stream_from(p.name, "mic")
            out[(v.name, p.name)] = (camera.frames, camera.sequence.expected + mic.sequence.expected,
                                     camera.sequence.received + mic.sequence.received)
        return out

    before = (await control.request("stats", reset_peaks=True))["stats"]["totals"]
    frames_before = snapshot()
    ticks, threads = process_cpu_seconds(pid), thread_run_seconds(pid)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    ticks_after, threads_after = process_cpu_seconds(pid), thread_run_seconds(pid)
    elapsed = time.monotonic() - started
    after = (await control.request("stats"))["stats"]["totals"]
    frames_after = snapshot()
    if set(threads) <= set(threads_after):  # precise per-thread time, unless a thread ended
        cpu = sum(threads_after[t] - threads.get(t, 0.0) for t in threads_after)
    else:
        cpu = ticks_after - ticks
    expected = sum(frames_after[k][1] - frames_before[k][1] for k in frames_after)
    got = sum(frames_after[k][2] - frames_before[k][2] for k in frames_after)
    return {
        "seconds": elapsed,
        "cpu_percent": 100 * cpu / elapsed,
        "forwarded_per_s": (after["packets_forwarded"] - before["packets_forwarded"]) / elapsed,
        "fps": statistics.mean((frames_after[k][0] - frames_before[k][0]) / elapsed for k in frames_after),
        "loss": max(0.0, 100 * (1 - got / expected)) if expected else 0.0,
        "lag": after["loop_lag_ms_max"],
    }


# --- report ------------------------------------------------------------------------------------


def table(result: dict) -> str:
    lines = ["| composition | media s | wall s | speed (x real time) | worker CPU s per media s | output MB |",
             "|---|---|---|---|---|---|"]
    for r in result["compose"]:
        lines.append(f"| {r['name']} | {r['media_seconds']:.0f} | {r['wall_seconds']:.1f} | {r['speed']:.1f} | "
                     f"{r['cpu_per_media_second']:.2f} | {r['output_bytes'] / 1e6:.1f} |")
    lines += ["", "| forwarding | server CPU % (windows) | packets fwd/s | fps | loss % | loop lag max ms | written MB |",
              "|---|---|---|---|---|---|---|"]
    for r in result["forwarding"]:
        windows = ", ".join(f"{c:.1f}" for c in r["cpu_percent_windows"])
        lines.append(f"| {r['name']} | {r['cpu_percent']:.1f} ({windows}) | {r['packets_forwarded_per_s']:.0f} | "
                     f"{r['fps']:.1f} | {r['loss_percent']:.2f} | {r['loop_lag_ms_max']} | "
                     f"{r['bytes_written'] / 1e6:.1f} |")
    if len(result["forwarding"]) == 2:
        off, on = result["forwarding"]
        lines.append(f"\nrecording adds {on['cpu_percent'] - off['cpu_percent']:.1f} points of one core "
                     f"({on['cpu_percent'] / off['cpu_percent'] - 1:+.0%}) to the server")
    return "\n".join(lines)


def parse_compose(value: str) -> tuple[int, bool]:
    """``4`` or ``4+screen``."""
    count, _, extra = value.partition("+")
    return int(count), extra == "screen"


def main(argv: list[str] | None = None) -> int:
    from meeting.recording.compose import ComposeSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny configurations, about twenty seconds")
    parser.add_argument("--compose", type=parse_compose, nargs="*", default=[(2, False), (4, False), (4, True)],
                        metavar="N[+screen]", help="rooms to compose (default: 2 4 4+screen)")
    parser.add_argument("--media-seconds", type=float, default=60.0, help="length of each composed recording")
    parser.add_argument("--preset", default=ComposeSettings().preset, help="x264 preset for composing")
    parser.add_argument("--people", type=int, default=4, help="publishers in the forwarding room")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per forwarding window")
    parser.add_argument("--repeats", type=int, default=3, help="off/on window pairs")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of media before measuring")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--bitrate", type=int, default=500_000, help="target VP8 bitrate, bit/s")
    parser.add_argument("--skip-forwarding", action="store_true", help="composition only")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "recording.json")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    if args.quick:
        args.compose, args.media_seconds = [(2, False), (4, False)], 4.0
        args.people, args.seconds, args.repeats, args.warmup = 2, 1.5, 1, 0.5
        args.width, args.height, args.bitrate = 320, 240, 300_000
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="meetnow-bench-recording-"))
    try:
        compose_rows = bench_compose(args, workdir)
        forwarding_rows = [] if args.skip_forwarding else asyncio.run(bench_forwarding(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load": {"camera": f"VP8 {args.width}x{args.height} 30 fps, {args.bitrate} bit/s target", "audio": "Opus 20 ms",
                 "output": f"H.264 (x264 {args.preset}) + AAC MP4, 1280x720, 15 fps"},
        "compose": [asdict(r) for r in compose_rows],
        "forwarding": [asdict(r) for r in forwarding_rows],
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\nwritten to {args.output} ({result['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
