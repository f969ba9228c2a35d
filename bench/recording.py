"""Recording benchmark: composition speed, and what recording costs the forwarding server.

Two parts, both with synthetic media (pre-encoded VP8 and 20 ms Opus in a loop; nothing
leaves loopback):

1. Composition: per-track files like the recorder writes (one camera and one mic per
   person, optionally a screen share) are composed into the one MP4 by
   ``meeting.recording.compose.compose`` in a worker process at low priority, as the server does.
   Speed is media seconds per wall second ("x real time"); CPU counts every thread of
   the worker (x264 encodes on several).
2. Forwarding CPU: meetnow's SFU in its own process (bench/harness/control.py, plus two
   operations of this script's own that start and stop a recording), a room of N
   publishers who all view each other, server CPU (all threads, from /proc) measured in
   alternating windows with the room's recorder off and on. "on" includes the recorder's writer thread (reordering,
   depacketizing, muxing to disk) as well as the tap on the event loop.

Run ``python bench/recording.py --help``. ``--quick`` runs tiny configurations in about
twenty seconds (used by the test suite to keep this script working).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
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

from bench.harness import cpu, results  # noqa: E402


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
    """The SFU's control server (bench/harness/control.py) with two more operations:
    ``record`` {room} starts a recorder on the room, ``stop-recording`` {room} stops it
    and replies with its summary."""
    from bench.harness.control import bench_sfu, serve as serve_sfu
    from meeting.recording.capture import RoomRecorder

    sfu = bench_sfu()
    recorders: dict[str, RoomRecorder] = {}
    made = [0]  # recordings so far: each gets its own folder

    async def record(msg: dict[str, Any]) -> dict[str, Any]:
        made[0] += 1
        path = Path(folder) / f"{msg['room']}-{made[0]}"
        path.mkdir(parents=True)
        recorder = RoomRecorder(path, lambda pid: pid, "bench")
        recorder.start()
        recorders[msg["room"]] = recorder
        sfu.open(msg["room"]).observe(recorder)
        return {}

    async def stop_recording(msg: dict[str, Any]) -> dict[str, Any]:
        room = sfu.room(msg["room"])
        if room is not None:
            room.unobserve()
        summary = await asyncio.to_thread(recorders.pop(msg["room"]).close)
        return {"summary": asdict(summary)}

    await serve_sfu(sfu, {"record": record, "stop-recording": stop_recording})


# --- forwarding: the benchmark side ---------------------------------------------------------


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


async def bench_forwarding(args: argparse.Namespace, workdir: Path) -> list[ForwardingRow]:
    """A room of ``args.people`` publishers on the SFU process; windows with the room's
    recorder off and on, in turn, ``args.repeats`` times."""
    from bench.harness.control import SfuProcess
    from bench.harness.load import wait_until
    from bench.synthetic import SyntheticParticipant, encoded_media

    media = encoded_media(args.width, args.height, fps=30, bitrate=args.bitrate, seconds=4.0)
    sfu = SfuProcess([str(Path(__file__).resolve()), "--serve", str(workdir / "sfu")])
    room = "room"
    people: list[SyntheticParticipant] = []
    try:
        await sfu.start()
        for i in range(args.people):
            person = SyntheticParticipant(f"p{i}", media, decode=False)
            people.append(person)
            await sfu.join(room, person, ["mic", "camera"])
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
                    await sfu.request("record", room=room)
                    await asyncio.sleep(args.warmup)  # the keyframes asked for at the start pass
                samples[recording].append(await _window(sfu, legs, args.seconds))
                if recording:
                    summary = (await sfu.request("stop-recording", room=room))["summary"]
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
        if sfu.errors:
            raise RuntimeError(f"server errors: {sfu.errors}")
        return [rows[False], rows[True]]
    finally:
        await sfu.close()
        for person in people:
            await person.close()


async def _window(sfu: Any, legs: list, seconds: float) -> dict:
    def snapshot() -> dict:
        out = {}
        for v, p in legs:
            camera, mic = v.stream_from(p.name, "camera"), v.stream_from(p.name, "mic")
            out[(v.name, p.name)] = (camera.frames, camera.sequence.expected + mic.sequence.expected,
                                     camera.sequence.received + mic.sequence.received)
        return out

    before = await sfu.totals(reset_peaks=True)
    frames_before = snapshot()
    cpu_before = cpu.read_cpu(sfu.pid)
    started = time.monotonic()
    await asyncio.sleep(seconds)  # the measuring window
    cpu_after = cpu.read_cpu(sfu.pid)
    elapsed = time.monotonic() - started
    after = await sfu.totals()
    frames_after = snapshot()
    server_cpu, _ = cpu.cpu_seconds_between(cpu_before, cpu_after)
    expected = sum(frames_after[k][1] - frames_before[k][1] for k in frames_after)
    got = sum(frames_after[k][2] - frames_before[k][2] for k in frames_after)
    return {
        "seconds": elapsed,
        "cpu_percent": 100 * server_cpu / elapsed,
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
    parser.add_argument("--output", type=Path, default=results.RESULTS / "recording.json")
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
        "machine": results.machine(),
        "load": {"camera": f"VP8 {args.width}x{args.height} 30 fps, {args.bitrate} bit/s target", "audio": "Opus 20 ms",
                 "output": f"H.264 (x264 {args.preset}) + AAC MP4, 1280x720, 15 fps"},
        "compose": [asdict(r) for r in compose_rows],
        "forwarding": [asdict(r) for r in forwarding_rows],
    }
    results.report(result, args.output, table(result), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
