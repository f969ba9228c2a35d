"""CPU time and dropped datagrams, read from /proc: what every benchmark window measures.

A process's CPU is the run time of each of its threads (/proc/<pid>/task/*/schedstat, in
ns), or utime + stime from /proc/<pid>/stat (10 ms ticks, but counting threads that ended)
when a thread ended during the window. The machine's busy time (/proc/stat) gives what
other work took meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# (utime + stime in seconds, run time in seconds per live thread)
CpuReading = tuple[float, dict[int, float]]


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads (ended ones included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


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


def read_cpu(pid: int) -> CpuReading:
    """Both readings of a process at once, for :func:`cpu_seconds_between`."""
    return process_cpu_seconds(pid), thread_run_seconds(pid)


def cpu_seconds_between(before: CpuReading, after: CpuReading) -> tuple[float, str]:
    """CPU a process used between two readings, and which reading it came from.

    The per-thread run times are precise but miss threads that ended in between; then
    the tick count (which includes them) is used.
    """
    if before[1] and after[1] and set(before[1]) <= set(after[1]):
        return sum(after[1][t] - before[1].get(t, 0.0) for t in after[1]), "schedstat"
    return after[0] - before[0], "stat"


def busiest_thread_percent(before: dict[int, float], after: dict[int, float], elapsed: float) -> float:
    """The largest share of one core any single thread used between two readings."""
    return max((100 * (after[t] - before.get(t, 0.0)) / elapsed for t in after), default=0.0)


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
