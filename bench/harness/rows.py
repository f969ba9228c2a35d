"""One measured window of one or several rooms on one server: a :class:`Row` of the tables.

:func:`run_room` gathers the synthetic participants on a server (``rooms`` rooms of the
same shape at once), waits until media flows on every leg (one viewer receiving one
publisher), waits for other work on the machine to calm down, and measures a window:
server and client CPU (all threads of every server process, from /proc), the frames,
packets and losses the viewers saw, latency by payload, datagrams the kernel dropped, and
what the rest of the machine used. bench/forwarding.py and bench/room_size.py are both
made of such rows.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.harness import cpu
from bench.harness.load import Gathering, p50, wait_until
from bench.synthetic import EncodedMedia, LatencyStamps
from meeting import internals


class Backend(Protocol):
    """A server a row runs on: meetnow's SFU process, ``meetnow serve`` with its media
    workers (bench/harness/serve.py), or Janus (bench/janus.py)."""

    label: str

    @property
    def pid(self) -> int: ...

    def processes(self) -> dict[str, int]:
        """The server's processes, by name (e.g. "front", "worker 0"): what its CPU is."""
        ...

    async def counters(self, reset_peaks: bool = False) -> dict | None: ...

    def errors(self) -> list[str]: ...

    async def gather(self, room: str, publishers: int, viewers: int, media: EncodedMedia,
                     stamps: LatencyStamps) -> Gathering: ...

    async def disperse(self, room: str, gathering: Gathering) -> None: ...


@dataclass
class Row:
    name: str
    publishers: int
    legs: int  # viewer legs: one viewer receiving one publisher (audio + video)
    backend: str = "meetnow"  # which server
    repeat: int = 0
    seconds: float = 0.0
    rooms: int = 1  # rooms of this shape at once (publishers: per room; legs, packets: all rooms)
    cpu_percent: float = 0.0  # server, all threads of all its processes, % of one core
    process_cpu_percent: dict = field(default_factory=dict)  # per server process (name -> % of one core)
    process_busiest_thread_percent: dict = field(default_factory=dict)  # per server process
    cpu_source: str = ""  # "schedstat" (per-thread ns) or "stat" (clock ticks, when a thread ended)
    cpu_percent_ticks: float = 0.0  # the same from /proc/<pid>/stat ticks, as a cross-check
    busiest_thread_percent: float = 0.0  # meetnow: an event loop; Janus: its busiest thread
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


async def run_room(
    backend: Backend,
    media: EncodedMedia,
    name: str,
    room: str,
    publishers: int,
    viewers: int,
    warmup: float,
    seconds: float,
    repeat: int = 0,
    quiet: tuple[float, float] = (0.0, 0.0),
    rooms: int = 1,
) -> Row:
    """Gather ``publishers`` publishing and ``viewers`` viewing-only participants on
    ``backend``, in each of ``rooms`` rooms at once (``room``-0, ``room``-1, ... when more
    than one); measure one window of ``seconds``; send everyone away.

    ``quiet`` is (limit, timeout): before the window, wait up to timeout s for other work
    to use under limit % of a core. A failure is recorded in the row's ``errors``.
    """
    stamps = LatencyStamps()
    row = Row(name=name, publishers=publishers, legs=0, backend=backend.label, repeat=repeat, rooms=rooms)
    names = [room] if rooms == 1 else [f"{room}-{i}" for i in range(rooms)]
    gatherings: list[tuple[str, Gathering]] = []
    started_setup = time.monotonic()
    try:
        for one in names:
            gatherings.append((one, await backend.gather(one, publishers, viewers, media, stamps)))
        legs = [leg for _, g in gatherings for leg in g.legs]
        publishing = [p for _, g in gatherings for p in g.publishers]
        everyone = [p for _, g in gatherings for p in g.everyone]
        row.legs = len(legs)

        def all_flowing() -> bool:
            return all(v.frames_from(p, "camera") > 0 and v.frames_from(p, "mic") > 0 for v, p in legs)

        await wait_until(all_flowing, 30 + 2 * len(everyone), f"media on every leg of {name}")
        row.setup_seconds = round(time.monotonic() - started_setup, 2)
        await asyncio.sleep(warmup)  # let rates settle before measuring
        servers = backend.processes()
        server_pids = list(servers.values())
        if quiet[0] > 0 and quiet[1] > 0:  # other work on the machine: let it pass if it will
            waited, _ = await cpu.wait_for_quiet([*server_pids, os.getpid()], *quiet)
            row.quiet_wait_seconds = round(waited, 1)

        def snapshot() -> dict:
            # per leg: video frames, packets received (all, RTX too), and packets expected
            # and received by sequence number
            out = {}
            for v, p in legs:
                camera, mic = v.stream_from(p, "camera"), v.stream_from(p, "mic")
                if camera is None or mic is None:  # the server dropped one of them
                    out[(id(v), p)] = None
                    continue
                out[(id(v), p)] = (
                    camera.frames,
                    camera.packets + mic.packets,
                    camera.sequence.expected + mic.sequence.expected,
                    camera.sequence.received + mic.sequence.received,
                )
            return out

        sent_before = {id(p): _sent_packets(p) for p in publishing}
        frames_before = snapshot()
        totals_before = await backend.counters(reset_peaks=True)
        for samples in stamps.samples.values():
            samples.clear()
        cpu_before = {label: cpu.read_cpu(pid) for label, pid in servers.items()}
        client_before = cpu.read_cpu(os.getpid())
        kernel_drops = cpu.udp_receive_buffer_errors()
        socket_drops = cpu.udp_socket_drops()
        machine_before = cpu.machine_busy_seconds()
        started = time.monotonic()
        await asyncio.sleep(seconds)  # the measuring window
        cpu_after = {label: cpu.read_cpu(pid) for label, pid in servers.items()}
        client_after = cpu.read_cpu(os.getpid())
        kernel_drops = cpu.udp_receive_buffer_errors() - kernel_drops
        socket_drops_after = cpu.udp_socket_drops()
        machine_after = cpu.machine_busy_seconds()
        elapsed = time.monotonic() - started
        frames_after = snapshot()
        sent_after = {id(p): _sent_packets(p) for p in publishing}
        totals_after = await backend.counters()

        row.seconds = round(elapsed, 2)
        server_cpu = 0.0
        sources = set()
        for label in servers:
            used, source = cpu.cpu_seconds_between(cpu_before[label], cpu_after[label])
            server_cpu += used
            sources.add(source)
            row.process_cpu_percent[label] = 100 * used / elapsed
            row.process_busiest_thread_percent[label] = cpu.busiest_thread_percent(
                cpu_before[label][1], cpu_after[label][1], elapsed)
        row.cpu_source = "stat" if "stat" in sources else "schedstat"
        client_cpu, _ = cpu.cpu_seconds_between(client_before, client_after)
        server_ticks = sum(cpu_after[label][0] - cpu_before[label][0] for label in servers)
        row.cpu_percent = 100 * server_cpu / elapsed
        row.cpu_percent_ticks = 100 * server_ticks / elapsed
        row.busiest_thread_percent = max(row.process_busiest_thread_percent.values(), default=0.0)
        row.client_busiest_thread_percent = cpu.busiest_thread_percent(client_before[1], client_after[1], elapsed)
        row.kernel_udp_drops = kernel_drops
        for owners, attribute in ((server_pids, "server_udp_drops"), ([os.getpid()], "client_udp_drops")):
            inodes = set().union(*(cpu.socket_inodes(owner) for owner in owners))
            setattr(row, attribute, sum(socket_drops_after[i] - socket_drops.get(i, 0)
                                        for i in inodes if i in socket_drops_after))
        row.client_cpu_percent = 100 * client_cpu / elapsed
        row.load_average = os.getloadavg()[0]
        row.other_cpu_percent = max(0.0, 100 * ((machine_after - machine_before) - server_ticks
                                                - (client_after[0] - client_before[0])) / elapsed)
        row.packets_sent = sum(sent_after[p] - sent_before[p] for p in sent_after)
        if totals_after is not None and totals_before is not None:
            row.server = {
                k: v - totals_before.get(k, 0)
                for k, v in totals_after.items()
                if k not in ("rooms", "participants", "loop_lag_ms_max")
            }
            row.server["loop_lag_ms_max"] = totals_after["loop_lag_ms_max"]
        if legs:
            def delta(k: Any, i: int) -> int:
                # a leg the server dropped at either end of the window received nothing in it
                before, after = frames_before[k], frames_after[k]
                return after[i] - before[i] if before is not None and after is not None else 0

            fps = [delta(k, 0) / elapsed for k in frames_after]
            row.fps = statistics.mean(fps)
            row.fps_worst_leg = min(fps)
            row.packets_forwarded = sum(delta(k, 1) for k in frames_after)
            # Sequence numbers seen by the viewers: robust to counting windows that start
            # and end a few packets apart on the two sides of the server.
            expected = sum(delta(k, 2) for k in frames_after)
            got = sum(delta(k, 3) for k in frames_after)
            row.loss_percent = max(0.0, 100 * (1 - got / expected)) if expected else 0.0
        if row.packets_forwarded:
            row.us_per_packet = 1e6 * server_cpu / row.packets_forwarded
        row.latency_video_ms = p50(stamps.samples["video"])
        row.latency_audio_ms = p50(stamps.samples["audio"])
    except Exception as exc:  # the row fails; the run goes on
        row.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        row.errors.extend(backend.errors())
        for one, gathering in gatherings:
            try:
                await backend.disperse(one, gathering)
            except Exception as exc:
                row.errors.append(f"leaving: {type(exc).__name__}: {exc}")
    return row


def disturbed(row: Row, quiet: float) -> bool:
    """A measurement that failed, during which other work took more than twice the
    ``quiet`` limit, or whose synthetic viewers fell so far behind that their sockets
    dropped datagrams (the instrument, not the server, lost them): to be measured again,
    and left out of a summary if a clean one exists."""
    return bool(row.errors) or row.client_udp_drops > 0 or (quiet > 0 and row.other_cpu_percent > 2 * quiet)


def _sent_packets(person: Any) -> int:
    return sum(internals.sender_packet_count(t.sender) for t in person.pc.getTransceivers())
