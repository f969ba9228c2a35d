"""Forwarding benchmark: meetnow's SFU and Janus's videoroom under the same synthetic load.

Publishers send pre-encoded VP8 (640x480, 30 fps, ~500 kbit/s by default) and 20 ms Opus
in a loop; viewers count packets and frames (RTP marker bit) from the cleartext SRTP
header without decoding. Each server runs in its own process and its CPU, all threads,
is read from /proc: the run time of each thread (/proc/<pid>/task/*/schedstat, in ns), or
utime + stime from /proc/<pid>/stat (10 ms ticks, but counting threads that ended) when a
thread ended during the window. meetnow's SFU is driven over a JSON-lines
socket on 127.0.0.1; Janus (Debian's package, bench/janus.py) over its HTTP API, with a
configuration the script writes to a temporary folder.

Both servers are measured in the same run, rows interleaved (the order of the servers
alternates from row to row), inside a private network namespace (bench/netns.py): Janus
never gathers candidates on loopback, so media goes to an address on a veth end in that
namespace, for both servers alike; the namespace has no other interface, so nothing can
leave the machine. Without root (no namespace) only meetnow runs, on 127.0.0.1.

Rows: one publisher with K viewers (K = 0 is the publisher-only baseline: what receiving
one publisher costs), and rooms of N where everyone publishes and watches everyone else.
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
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# SO_RCVBUF of the synthetic peers' sockets (the servers keep their own defaults): the
# viewers live in one Python event loop, and must not be where packets get lost.
CLIENT_RECEIVE_BUFFER = 4 << 20

# --- the server process ----------------------------------------------------------------


async def serve(receive_loss: float, address: str) -> None:
    """Run an Sfu announcing ``address`` and a JSON-lines control socket on 127.0.0.1;
    print the port."""
    from meeting.config import MediaConfig
    from meeting.media.peer import Offer
    from meeting.media.sfu import Sfu

    allowed = "127.0.0.0/8" if address.startswith("127.") else f"{address}/32"
    sfu = Sfu(
        MediaConfig(announce_addresses=(address,), allowed_peer_networks=(allowed,), max_participants=64),
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

                    peers[(room, pid)] = await sfu.open(room).join(pid, send_offer, publish=msg["publish"])
                    await send({"op": "ok", "id": msg["id"]})
                elif op == "answer":
                    peer = peers.get((msg["room"], msg["pid"]))
                    if peer is not None:  # else it left while its answer was on the way
                        await peer.accept_answer(msg["sdp"])
                elif op == "leave":
                    await sfu.open(msg["room"]).leave(msg["pid"])
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
    """The kernel's count of UDP datagrams dropped for a full receive buffer (this namespace)."""
    lines = Path("/proc/net/snmp").read_text().splitlines()
    names, values = [line.split()[1:] for line in lines if line.startswith("Udp:")][:2]
    return int(dict(zip(names, values))["RcvbufErrors"])


def udp_socket_drops() -> dict[str, int]:
    """Datagrams dropped so far per UDP socket (by inode) in this network namespace."""
    out = {}
    for proto in ("udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            out[parts[9]] = int(parts[-1])
    return out


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets a process has open."""
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                found.add(link[8:-1])
    except OSError:
        pass
    return found


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, not idle or waiting), /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


async def others_percent(pids: list[int], seconds: float) -> float:
    """What everything but ``pids`` used of the machine over ``seconds``, % of one core."""
    busy, mine = machine_busy_seconds(), sum(process_cpu_seconds(p) for p in pids)
    await asyncio.sleep(seconds)  # a measuring window, not a wait for something to happen
    return 100 * ((machine_busy_seconds() - busy) - (sum(process_cpu_seconds(p) for p in pids) - mine)) / seconds


async def wait_for_quiet(pids: list[int], limit: float, timeout: float) -> tuple[float, float]:
    """Wait (up to ``timeout`` s) until other work on the machine uses under ``limit`` % of
    a core; returns (seconds waited, the last reading)."""
    started = time.monotonic()
    while True:
        other = await others_percent(pids, 0.5)
        waited = time.monotonic() - started
        if other < limit or waited >= timeout:
            return waited, other
        await asyncio.sleep(0.5)


def _stat_cpu(path: Path) -> float:
    fields_ = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / CLOCK_TICKS


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads, in seconds."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def thread_run_seconds(pid: int) -> dict[int, float]:
    """Time on CPU of each live thread of a process, from /proc/<pid>/task/*/schedstat
    (nanoseconds, where /proc/<pid>/stat counts clock ticks of 10 ms)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass
    return out


def cpu_seconds_between(pid: int, before: tuple[float, dict[int, float]], after: tuple[float, dict[int, float]]) -> tuple[float, str]:
    """CPU a process used between two readings of (ticks total, per-thread run time).

    The per-thread run times are precise but miss threads that ended in between; then
    the tick count (which includes them) is used.
    """
    ticks = after[0] - before[0]
    if before[1] and after[1] and set(before[1]) <= set(after[1]):
        return sum(after[1][t] - before[1].get(t, 0.0) for t in after[1]), "schedstat"
    return ticks, "stat"


def busiest_thread_percent(before: dict[int, float], after: dict[int, float], elapsed: float) -> float:
    """The largest share of one core any single thread used between two readings."""
    return max((100 * (after[t] - before.get(t, 0.0)) / elapsed for t in after), default=0.0)


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
        from meeting.media.peer import Offer, TrackSlot

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
    """Stands in for meeting.media.sfu.Peer on the benchmark side of the control socket."""

    def __init__(self, control: Control, room: str, pid: str) -> None:
        self.control = control
        self.room = room
        self.pid = pid

    async def accept_answer(self, sdp: str) -> None:
        self.control.send("answer", room=self.room, pid=self.pid, sdp=sdp)


@dataclass
class Gathering:
    """The synthetic people of one row on one server."""

    publishers: list[Any] = field(default_factory=list)  # peers whose senders carry published media
    legs: list[tuple[Any, str]] = field(default_factory=list)  # (receiving peer, publisher's name)
    everyone: list[Any] = field(default_factory=list)


class MeetnowBackend:
    """meetnow's SFU in a child process (``--serve``), one peer connection per participant."""

    label = "meetnow"

    def __init__(self, address: str, receive_loss: float = 0.0, profile: Path | None = None,
                 log: Path | None = None) -> None:
        self.address = address
        self.receive_loss = receive_loss
        self.profile = profile
        self.log = log  # the server's stderr (its warnings); None: this process's stderr
        self.process: subprocess.Popen | None = None
        self.control: Control | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        log = open(self.log, "wb") if self.log else None
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", "--address", self.address,
             "--receive-loss", str(self.receive_loss)]
            + (["--profile", str(self.profile)] if self.profile else []),
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=str(ROOT),
        )
        if log is not None:
            log.close()
        port = int(self.process.stdout.readline())
        reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self.control = Control(reader, self._writer)

    async def close(self) -> None:
        if self.control is not None:
            try:
                await self.control.request("quit")
            except Exception:
                pass
            self.control.task.cancel()
            self._writer.close()
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def counters(self, reset_peaks: bool = False) -> dict | None:
        return (await self.control.request("stats", reset_peaks=reset_peaks))["stats"]["totals"]

    def participant(self, name: str, media: Any, stamps: Any) -> Any:
        from bench.synthetic import SyntheticParticipant

        allowed = "127.0.0.0/8" if self.address.startswith("127.") else f"{self.address}/32"
        return SyntheticParticipant(
            name, media, decode=False, stamps=stamps, announce=(self.address,), allowed_networks=(allowed,),
            receive_buffer=CLIENT_RECEIVE_BUFFER,
        )

    async def gather(self, room: str, publishers: int, viewers: int, media: Any, stamps: Any) -> Gathering:
        control = self.control
        control.errors.clear()
        gathering = Gathering()
        for i in range(publishers + viewers):
            pid = f"p{i}" if i < publishers else f"v{i}"
            person = self.participant(pid, media, stamps)
            person.peer = RemotePeer(control, room, pid)
            control.participants[(room, pid)] = person
            gathering.everyone.append(person)
            if i < publishers:
                gathering.publishers.append(person)
            await control.request("join", room=room, pid=pid, publish=["mic", "camera"] if i < publishers else [])
        pubs = [p.name for p in gathering.publishers]
        gathering.legs = [(v, p) for v in gathering.everyone for p in pubs if p != v.name]
        return gathering

    async def disperse(self, room: str, gathering: Gathering) -> None:
        for person in gathering.everyone:
            await self.control.request("leave", room=room, pid=person.name)
            self.control.participants.pop((room, person.name), None)
            await person.close()

    def errors(self) -> list[str]:
        return list(self.control.errors) if self.control else []


@dataclass
class Row:
    name: str
    publishers: int
    legs: int  # viewer legs: one viewer receiving one publisher (audio + video)
    backend: str = "meetnow"  # which server
    repeat: int = 0
    seconds: float = 0.0
    cpu_percent: float = 0.0  # server, all threads, % of one core
    cpu_source: str = ""  # "schedstat" (per-thread ns) or "stat" (clock ticks, when a thread ended)
    cpu_percent_ticks: float = 0.0  # the same from /proc/<pid>/stat ticks, as a cross-check
    busiest_thread_percent: float = 0.0  # meetnow: its event loop; Janus: its busiest thread
    packets_forwarded: int = 0  # RTP packets the viewers received in the window
    us_per_packet: float = 0.0
    us_per_packet_marginal: float | None = None
    percent_per_leg: float | None = None
    fps: float = 0.0
    fps_worst_leg: float = 0.0
    loss_percent: float = 0.0
    latency_video_ms: float | None = None
    latency_audio_ms: float | None = None
    added_video_ms: float | None = None
    added_audio_ms: float | None = None
    server: dict = field(default_factory=dict)  # meetnow's own counters over the window
    packets_sent: int = 0  # by the publishers, in the window
    kernel_udp_drops: int = 0  # datagrams the kernel dropped (full socket buffers), whole namespace
    server_udp_drops: int = 0  # of which at the server's sockets
    client_udp_drops: int = 0  # of which at the synthetic peers' sockets
    client_cpu_percent: float = 0.0  # the benchmark's own process (all synthetic peers)
    client_busiest_thread_percent: float = 0.0  # its event loop, in practice
    load_average: float = 0.0  # 1-minute load average at the end of the window
    other_cpu_percent: float = 0.0  # the rest of the machine during the window, % of one core
    quiet_wait_seconds: float = 0.0  # waited before the window for other work to calm down
    setup_seconds: float = 0.0  # joining everyone until media flowed on every leg
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
    backend: Any,
    media: Any,
    name: str,
    room: str,
    publishers: int,
    viewers: int,
    warmup: float,
    seconds: float,
    repeat: int = 0,
    quiet: tuple[float, float] = (0.0, 0.0),
) -> Row:
    """Gather ``publishers`` publishing and ``viewers`` viewing-only participants on
    ``backend``; measure one window; send everyone away."""
    from bench.synthetic import LatencyStamps

    stamps = LatencyStamps()
    row = Row(name=name, publishers=publishers, legs=0, backend=backend.label, repeat=repeat)
    gathering = Gathering()
    started_setup = time.monotonic()
    try:
        gathering = await backend.gather(room, publishers, viewers, media, stamps)
        legs = gathering.legs
        row.legs = len(legs)

        def all_flowing() -> bool:
            return all(v.frames_from(p, "camera") > 0 and v.frames_from(p, "mic") > 0 for v, p in legs)

        await wait_until(all_flowing, 30 + 2 * len(gathering.everyone), f"media on every leg of {name}")
        row.setup_seconds = round(time.monotonic() - started_setup, 2)
        await asyncio.sleep(warmup)  # let rates settle before measuring
        if quiet[0] > 0 and quiet[1] > 0:  # other work on the machine: let it pass if it will
            waited, _ = await wait_for_quiet([backend.pid, os.getpid()], *quiet)
            row.quiet_wait_seconds = round(waited, 1)

        def snapshot() -> dict:
            # per leg: video frames, packets received (all, RTX too), and packets expected
            # and received by sequence number
            out = {}
            for v, p in legs:
                camera, mic = v.stream_from(p, "camera"), v.stream_from(p, "mic")
                out[(v.name, p)] = (
                    camera.frames,
                    camera.packets + mic.packets,
                    camera.sequence.expected + mic.sequence.expected,
                    camera.sequence.received + mic.sequence.received,
                )
            return out

        sent_before = {p.name: _sent_packets(p) for p in gathering.publishers}
        frames_before = snapshot()
        totals_before = await backend.counters(reset_peaks=True)
        for samples in stamps.samples.values():
            samples.clear()
        cpu_before = (process_cpu_seconds(backend.pid), thread_run_seconds(backend.pid))
        client_before = (process_cpu_seconds(os.getpid()), thread_run_seconds(os.getpid()))
        kernel_drops = udp_receive_buffer_errors()
        socket_drops = udp_socket_drops()
        machine_before = machine_busy_seconds()
        started = time.monotonic()
        await asyncio.sleep(seconds)
        cpu_after = (process_cpu_seconds(backend.pid), thread_run_seconds(backend.pid))
        client_after = (process_cpu_seconds(os.getpid()), thread_run_seconds(os.getpid()))
        kernel_drops = udp_receive_buffer_errors() - kernel_drops
        socket_drops_after = udp_socket_drops()
        machine_after = machine_busy_seconds()
        elapsed = time.monotonic() - started
        frames_after = snapshot()
        sent_after = {p.name: _sent_packets(p) for p in gathering.publishers}
        totals_after = await backend.counters()

        row.seconds = round(elapsed, 2)
        cpu, row.cpu_source = cpu_seconds_between(backend.pid, cpu_before, cpu_after)
        client_cpu, _ = cpu_seconds_between(os.getpid(), client_before, client_after)
        row.cpu_percent = 100 * cpu / elapsed
        row.cpu_percent_ticks = 100 * (cpu_after[0] - cpu_before[0]) / elapsed
        row.busiest_thread_percent = busiest_thread_percent(cpu_before[1], cpu_after[1], elapsed)
        row.client_busiest_thread_percent = busiest_thread_percent(client_before[1], client_after[1], elapsed)
        row.kernel_udp_drops = kernel_drops
        for owner, attribute in ((backend.pid, "server_udp_drops"), (os.getpid(), "client_udp_drops")):
            setattr(row, attribute, sum(socket_drops_after[i] - socket_drops.get(i, 0)
                                        for i in socket_inodes(owner) if i in socket_drops_after))
        row.client_cpu_percent = 100 * client_cpu / elapsed
        row.load_average = os.getloadavg()[0]
        row.other_cpu_percent = max(0.0, 100 * ((machine_after - machine_before) - (cpu_after[0] - cpu_before[0])
                                                - (client_after[0] - client_before[0])) / elapsed)
        row.packets_sent = sum(sent_after[p] - sent_before[p] for p in sent_after)
        if totals_after is not None:
            row.server = {
                k: v - totals_before.get(k, 0)
                for k, v in totals_after.items()
                if k not in ("rooms", "participants", "loop_lag_ms_max")
            }
            row.server["loop_lag_ms_max"] = totals_after["loop_lag_ms_max"]
        if legs:
            fps = [(frames_after[k][0] - frames_before[k][0]) / elapsed for k in frames_after]
            row.fps = statistics.mean(fps)
            row.fps_worst_leg = min(fps)
            row.packets_forwarded = sum(frames_after[k][1] - frames_before[k][1] for k in frames_after)
            # Sequence numbers seen by the viewers: robust to counting windows that start
            # and end a few packets apart on the two sides of the server.
            expected = sum(frames_after[k][2] - frames_before[k][2] for k in frames_after)
            got = sum(frames_after[k][3] - frames_before[k][3] for k in frames_after)
            row.loss_percent = max(0.0, 100 * (1 - got / expected)) if expected else 0.0
        if row.packets_forwarded:
            row.us_per_packet = 1e6 * cpu / row.packets_forwarded
        row.latency_video_ms = p50(stamps.samples["video"])
        row.latency_audio_ms = p50(stamps.samples["audio"])
    except Exception as exc:  # the row fails; the run goes on
        row.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        row.errors.extend(getattr(backend, "errors", lambda: [])())
        try:
            await backend.disperse(room, gathering)
        except Exception as exc:
            row.errors.append(f"leaving: {type(exc).__name__}: {exc}")
    return row


def _sent_packets(person: Any) -> int:
    from meeting import internals

    return sum(internals.sender_packet_count(t.sender) for t in person.pc.getTransceivers())


async def direct_latency(media: Any, seconds: float, address: str) -> tuple[float | None, float | None]:
    """Median latency publisher -> viewer over a direct aiortc connection (no server)."""
    from meeting.media.peer import Offer, TrackSlot
    from bench.synthetic import LatencyStamps, SyntheticParticipant

    stamps = LatencyStamps()
    allowed = ("127.0.0.0/8",) if address.startswith("127.") else (f"{address}/32",)
    publisher = SyntheticParticipant("pub", media, decode=False, stamps=stamps, announce=(address,),
                                     allowed_networks=allowed, receive_buffer=CLIENT_RECEIVE_BUFFER)
    viewer = SyntheticParticipant("view", media, decode=False, stamps=stamps, announce=(address,),
                                  allowed_networks=allowed, receive_buffer=CLIENT_RECEIVE_BUFFER)
    try:
        # The publisher offers its two tracks; the viewer answers as a receiver.
        offer = await publisher.offer_to_publish(("mic", "camera"))
        mids = [t.mid for t in publisher.pc.getTransceivers()]
        slots = tuple(
            TrackSlot(mid=mid, kind=kind, source=source, direction="receive", participant="pub")
            for mid, kind, source in zip(mids, ("audio", "video"), ("mic", "camera"))
        )
        answer = await viewer.answer(Offer(sdp=offer, slots=slots))
        await publisher.accept_publish_answer(answer)
        await wait_until(lambda: viewer.frames_from("pub", "camera") > 10, 20, "direct media")
        for samples in stamps.samples.values():
            samples.clear()
        await asyncio.sleep(seconds)
        return p50(stamps.samples["video"]), p50(stamps.samples["audio"])
    finally:
        await publisher.close()
        await viewer.close()


# --- the run -----------------------------------------------------------------------------

JANUS_CONFIGS = {"janus2": ("Janus, event_loops=2", 2), "janus": ("Janus, default", None)}


async def start_backends(args: argparse.Namespace, address: str, skipped: dict[str, str]) -> list[Any]:
    """meetnow and the Janus configurations asked for that can run here."""
    from bench import janus, netns

    backends: list[Any] = []
    for name in args.servers:
        if name == "meetnow":
            log = args.output.with_suffix(".meetnow.log")
            log.parent.mkdir(parents=True, exist_ok=True)
            backend: Any = MeetnowBackend(address, args.receive_loss, args.profile, log)
        else:
            label, loops = JANUS_CONFIGS[name]
            if netns.inside() != "veth":
                skipped[label] = "no private network namespace (needs root): Janus cannot run on loopback"
                continue
            if janus.janus_binary() is None:
                skipped[label] = "janus is not installed (apt-get install -y janus)"
                continue
            backend = janus.JanusBackend(label, event_loops=loops, enforce=netns.VETH_NAME, address=address)
        await backend.start()
        backends.append(backend)
    for label, why in skipped.items():
        print(f"  skipping {label}: {why}", file=sys.stderr, flush=True)
    return backends


def server_log_summary(backends: list[Any]) -> dict | None:
    """Where meetnow's server wrote its warnings, and how many tracebacks it holds."""
    for backend in backends:
        if isinstance(backend, MeetnowBackend) and backend.log is not None and backend.log.exists():
            text = backend.log.read_text(errors="replace")
            return {"path": str(backend.log), "tracebacks": text.count("Traceback (most recent call last)"),
                    "lines": len(text.splitlines())}
    return None


def plan_rows(viewers: list[int], rooms: list[int]) -> list[tuple[str, int, int]]:
    plan = [(f"1 publisher, K={k}", 1, k) for k in viewers]
    plan += [(f"room N={n}, all publish", n, 0) for n in rooms]
    return plan


async def measure(backends: list[Any], media: Any, plan: list[tuple[str, int, int]], args: argparse.Namespace,
                  log_prefix: str = "") -> list[Row]:
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
                                         args.warmup, args.seconds, repeat, (args.quiet, args.quiet_wait))
                    rows.append(row)
                    note = f"; errors: {row.errors}" if row.errors else ""
                    print(f"  {log_prefix}{backend.label:22} {name:24} CPU {row.cpu_percent:5.1f}%  "
                          f"fps {row.fps:4.1f}  loss {row.loss_percent:.2f}%  other work {row.other_cpu_percent:3.0f}%"
                          f"{note}", file=sys.stderr, flush=True)
                    await asyncio.sleep(0.5)  # let the teardown settle before the next row
                    if not disturbed(row, args):
                        break
    return rows


def disturbed(row: Row, args: argparse.Namespace) -> bool:
    """A measurement that failed, during which other work took more than twice the --quiet
    limit, or whose synthetic viewers fell so far behind that their sockets dropped
    datagrams (the instrument, not the server, lost them): measured again (--retries),
    and left out of the summary if a clean one exists."""
    return (bool(row.errors) or row.client_udp_drops > 0
            or (args.quiet > 0 and row.other_cpu_percent > 2 * args.quiet))


_MEDIAN_FIELDS = [f.name for f in fields(Row) if f.type in ("float", "int", "float | None")
                  and f.name not in ("publishers", "legs", "repeat")]


def summarize(rows: list[Row], direct: tuple[float | None, float | None],
              args: argparse.Namespace | None = None) -> dict[str, list[dict]]:
    """Per server, one row per configuration: the median of its repeats (disturbed
    measurements left out when clean ones exist), with marginal figures against that
    server's publisher-only row."""
    out: dict[str, list[dict]] = {}
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = [r for r in rows if r.backend == backend]
        summary: list[dict] = []
        for name in dict.fromkeys(r.name for r in mine):
            group = [r for r in mine if r.name == name]
            good = ([r for r in group if args is None or not disturbed(r, args)]
                    or [r for r in group if not r.errors] or group)
            merged = asdict(good[0])
            merged.pop("repeat")
            for key in _MEDIAN_FIELDS:
                values = [getattr(r, key) for r in good if getattr(r, key) is not None]
                merged[key] = statistics.median(values) if values else None
            per_packet = [r.us_per_packet for r in good if r.us_per_packet]
            merged["us_per_packet_range"] = [min(per_packet), max(per_packet)] if per_packet else None
            merged["repeats"] = len(good)
            merged["measured"] = len(group)
            merged["errors"] = [e for r in good for e in r.errors]
            merged["left_out"] = [{"repeat": r.repeat, "errors": r.errors, "other_cpu_percent": r.other_cpu_percent}
                                  for r in group if all(r is not g for g in good)]
            summary.append(merged)
        baseline = next((r for r in summary if r["publishers"] == 1 and r["legs"] == 0), None)
        for row in summary:
            if baseline is not None and row["legs"] and row["packets_forwarded"]:
                base_cpu = baseline["cpu_percent"] * row["publishers"]  # ingest of the publishers
                row["us_per_packet_marginal"] = (
                    1e4 * (row["cpu_percent"] - base_cpu) * row["seconds"] / row["packets_forwarded"])
                row["percent_per_leg"] = (row["cpu_percent"] - base_cpu) / row["legs"]
            if row["latency_video_ms"] is not None and direct[0] is not None:
                row["added_video_ms"] = row["latency_video_ms"] - direct[0]
            if row["latency_audio_ms"] is not None and direct[1] is not None:
                row["added_audio_ms"] = row["latency_audio_ms"] - direct[1]
        out[backend] = summary
    return out


def compare(servers: dict[str, list[dict]], baseline: str) -> list[dict]:
    """meetnow against ``baseline`` row by row: ratios of CPU per forwarded packet."""
    mine = {r["name"]: r for r in servers.get("meetnow", [])}
    theirs = {r["name"]: r for r in servers.get(baseline, [])}
    out = []
    for name, m in mine.items():
        j = theirs.get(name)
        if j is None:
            continue
        entry = {"name": name, "baseline": baseline, "cpu_ratio": _ratio(m["cpu_percent"], j["cpu_percent"]),
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


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform()}


def network_description(address: str) -> str:
    from bench import netns

    if netns.inside() == "veth":
        return f"private network namespace, media to {address} on a veth end (local delivery)"
    if netns.inside() == "lo":
        return f"private network namespace, loopback only ({address})"
    return f"loopback ({address}), no namespace"


async def bench(args: argparse.Namespace) -> dict:
    from bench import janus, netns
    from bench.synthetic import encoded_media

    address = netns.VETH_ADDRESS if netns.inside() == "veth" else "127.0.0.1"
    media = encoded_media(args.width, args.height, fps=args.fps, bitrate=args.bitrate, seconds=args.loop)
    skipped: dict[str, str] = {}
    backends = await start_backends(args, address, skipped)
    try:
        direct_video, direct_audio = await direct_latency(media, min(args.seconds, 5.0), address)
        rows = await measure(backends, media, plan_rows(args.viewers, args.rooms), args)
    finally:
        for backend in backends:
            await backend.close()
    servers = summarize(rows, (direct_video, direct_audio), args)
    baseline = next((b.label for b in backends if b.label != "meetnow"), None)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "network": network_description(address),
        "janus_version": janus.janus_version(),
        "load": {
            "video": f"VP8 {args.width}x{args.height} {args.fps} fps",
            "video_bitrate_measured": round(media.video_bitrate),
            "audio": "Opus 20 ms",
            "receive_loss": args.receive_loss,
            "seconds_per_row": args.seconds,
            "repeats": args.repeat,
        },
        "direct_latency_ms": {"video": direct_video, "audio": direct_audio},
        "fit_us_per_packet_one_publisher": {
            label: _fit_us_per_packet([r for r in summary if r["publishers"] == 1])
            for label, summary in servers.items()
        },
        "skipped": skipped,
        "meetnow_log": server_log_summary(backends),
        # meetnow's rows (as before the comparison existed), every server's, the ratios,
        # and every single measurement
        "rows": servers.get("meetnow", []),
        "servers": servers,
        "comparison": compare(servers, baseline) if baseline else [],
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


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(result: dict) -> str:
    head = ("row", "server", "CPU %", "us/pkt (range)", "us/pkt marg.", "% core/leg", "fps", "loss %",
            "added v/a ms", "busiest thread %", "client CPU %", "other work %")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    servers = result["servers"]
    names = list(dict.fromkeys(r["name"] for rows in servers.values() for r in rows))
    for name in names:
        for label, rows in servers.items():
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
        lines.append("| row | CPU ratio | per forwarded packet | marginal per packet | added latency v/a, ms more |")
        lines.append("|---|---|---|---|---|")
        for c in result["comparison"]:
            lines.append(f"| {c['name']} | {fmt(c['cpu_ratio'], '.2f')} | {fmt(c['us_per_packet_ratio'], '.2f')} | "
                         f"{fmt(c['us_per_packet_marginal_ratio'], '.2f')} | "
                         f"{fmt(c['added_video_ms_difference'], '+.1f')} / {fmt(c['added_audio_ms_difference'], '+.1f')} |")
    for label, fit in result["fit_us_per_packet_one_publisher"].items():
        if fit is not None:
            lines.append(f"\n{label}: fit over the one-publisher rows: {fit:.1f} us of server CPU per forwarded packet")
    d = result["direct_latency_ms"]
    lines.append(f"\ndirect aiortc-to-aiortc latency p50: video {fmt(d['video'], '.1f')} ms, audio {fmt(d['audio'], '.1f')} ms")
    lines.append(f"network: {result['network']}")
    for label, why in result["skipped"].items():
        lines.append(f"skipped {label}: {why}")
    log = result.get("meetnow_log")
    if log and log["lines"]:
        lines.append(f"meetnow's server wrote {log['lines']} log lines ({log['tracebacks']} tracebacks): {log['path']}")
    return "\n".join(lines)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The media and server options shared with bench/room_size.py."""
    parser.add_argument("--servers", nargs="*", default=["meetnow", "janus2"],
                        choices=["meetnow", "janus2", "janus"],
                        help="servers to compare: meetnow, janus2 (Janus with event_loops = 2, the baseline), "
                             "janus (Janus's default configuration); default: meetnow janus2")
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


def enter_namespace(args: argparse.Namespace) -> None:
    """Re-run this script in a private network namespace with a veth pair, if possible."""
    from bench import netns

    if args.no_netns or netns.inside():
        if netns.inside():
            netns.enter(veth=netns.inside() == "veth")
        return
    try:
        netns.enter(veth=True)  # does not return
    except RuntimeError as exc:
        print(f"  {exc}: running on loopback, meetnow only", file=sys.stderr)


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
    add_load_arguments(parser)
    parser.add_argument("--receive-loss", type=float, default=0.0, help="server-side receive loss (test hook)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "forwarding.json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--address", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=Path, help="write a cProfile of meetnow's server process to this file")
    args = parser.parse_args(argv)
    if args.serve:
        if args.profile:
            import cProfile

            cProfile.runctx("asyncio.run(serve(args.receive_loss, args.address))", globals(), {"args": args},
                            str(args.profile))
        else:
            asyncio.run(serve(args.receive_loss, args.address))
        return 0
    if args.quick:
        args.viewers, args.rooms, args.repeat = [0, 1], [], 1
        args.seconds, args.warmup, args.loop, args.quiet = 1.0, 0.2, 2.0, 0.0
        args.width, args.height, args.bitrate = 320, 240, 300_000
    enter_namespace(args)
    started = time.monotonic()
    result = asyncio.run(bench(args))
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\nwritten to {args.output} ({result['wall_seconds']} s)")
    return 1 if any(r["errors"] for rows in result["servers"].values() for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
