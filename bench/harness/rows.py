"""One measured window of one room on one server: a :class:`Row` of the benchmark tables.

:func:`run_room` gathers the synthetic participants on a server, waits until media flows
on every leg (one viewer receiving one publisher), waits for other work on the machine to
calm down, and measures a window: server and client CPU (all threads, from /proc), the
frames, packets and losses the viewers saw, latency by payload, datagrams the kernel
dropped, and what the rest of the machine used. bench/forwarding.py and
bench/room_size.py are both made of such rows.
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
    """A server a row runs on: meetnow's SFU process, or Janus (bench/janus.py)."""

    label: str

    @property
    def pid(self) -> int: ...

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
) -> Row:
    """Gather ``publishers`` publishing and ``viewers`` viewing-only participants on
    ``backend``; measure one window of ``seconds``; send everyone away.

    ``quiet`` is (limit, timeout): before the window, wait up to timeout s for other work
    to use under limit % of a core. A failure is recorded in the row's ``errors``.
    """
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
            waited, _ = await cpu.wait_for_quiet([backend.pid, os.getpid()], *quiet)
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
        cpu_before = cpu.read_cpu(backend.pid)
        client_before = cpu.read_cpu(os.getpid())
        kernel_drops = cpu.udp_receive_buffer_errors()
        socket_drops = cpu.udp_socket_drops()
        machine_before = cpu.machine_busy_seconds()
        started = time.monotonic()
        await asyncio.sleep(seconds)  # the measuring window
        cpu_after = cpu.read_cpu(backend.pid)
        client_after = cpu.read_cpu(os.getpid())
        kernel_drops = cpu.udp_receive_buffer_errors() - kernel_drops
        socket_drops_after = cpu.udp_socket_drops()
        machine_after = cpu.machine_busy_seconds()
        elapsed = time.monotonic() - started
        frames_after = snapshot()
        sent_after = {p.name: _sent_packets(p) for p in gathering.publishers}
        totals_after = await backend.counters()

        row.seconds = round(elapsed, 2)
        server_cpu, row.cpu_source = cpu.cpu_seconds_between(cpu_before, cpu_after)
        client_cpu, _ = cpu.cpu_seconds_between(client_before, client_after)
        row.cpu_percent = 100 * server_cpu / elapsed
        row.cpu_percent_ticks = 100 * (cpu_after[0] - cpu_before[0]) / elapsed
        row.busiest_thread_percent = cpu.busiest_thread_percent(cpu_before[1], cpu_after[1], elapsed)
        row.client_busiest_thread_percent = cpu.busiest_thread_percent(client_before[1], client_after[1], elapsed)
        row.kernel_udp_drops = kernel_drops
        for owner, attribute in ((backend.pid, "server_udp_drops"), (os.getpid(), "client_udp_drops")):
            setattr(row, attribute, sum(socket_drops_after[i] - socket_drops.get(i, 0)
                                        for i in cpu.socket_inodes(owner) if i in socket_drops_after))
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
            row.us_per_packet = 1e6 * server_cpu / row.packets_forwarded
        row.latency_video_ms = p50(stamps.samples["video"])
        row.latency_audio_ms = p50(stamps.samples["audio"])
    except Exception as exc:  # the row fails; the run goes on
        row.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        row.errors.extend(backend.errors())
        try:
            await backend.disperse(room, gathering)
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
