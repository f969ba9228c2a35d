"""Participants on links of their own: one network namespace each, a veth to the server's.

The server runs in the calling process's namespace (for the tests, the private one
``tests/netns.sh`` made; for benchmarks, the one ``bench/netns.py`` made), holding
``SERVER`` on its loopback. Participant N lives in a namespace of its own, kept alive by
a ``sleep`` process the lab started, with ``10.88.N.2`` on one end of a veth pair and a
default route to ``10.88.N.1`` on the other end, in the server's namespace. Nothing else
is reachable from there: participants cannot reach each other (forwarding is off) and no
namespace here has a route anywhere else.

Each participant's downlink is the server end of its veth: :meth:`NetLab.limit` shapes it
with ``tbf`` (a rate, a burst and a queue) and drops a share of the UDP packets the server
sends it with an nftables ``numgen random`` rule (``netem`` does not exist on these
machines). :meth:`NetLab.chromium` writes a launcher that starts Debian's chromium inside a
participant's namespace, at a lower priority than the server, so a busy machine measures
the server rather than the browsers.

Needs root, ``ip`` and ``tc`` (iproute2), ``nft`` (nftables), ``nsenter`` and ``unshare``
(util-linux).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

SERVER = "10.88.0.1"
TABLE = "meetnow_netlab"
TOOLS = ("ip", "tc", "nft", "nsenter", "unshare")


def missing_tools() -> list[str]:
    """What this machine lacks to build a lab (empty when it can)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")


def _wait_for_namespace(holder: subprocess.Popen, timeout: float = 10.0) -> None:
    """Wait until ``holder`` (``unshare --net ...``) is in a namespace of its own."""
    ours = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.readlink(f"/proc/{holder.pid}/ns/net") != ours:
                return
        except OSError:
            pass
        if holder.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("a participant's network namespace did not come up")
        time.sleep(0.01)


class NetLab:
    """``count`` participant namespaces linked to this one; :meth:`close` undoes it all."""

    def __init__(self, count: int, folder: Path) -> None:
        self.count = count
        self.folder = folder
        self.holders: list[subprocess.Popen] = []
        self.losses: dict[int, int] = {}  # participant -> percent of UDP dropped

    @staticmethod
    def address(n: int) -> str:
        """Participant ``n``'s address (1-based)."""
        return f"10.88.{n}.2"

    def open(self) -> None:
        """Make the namespaces and links; raises RuntimeError (having undone them) on failure."""
        problems = missing_tools()
        if problems:
            raise RuntimeError("a network lab needs " + ", ".join(problems))
        try:
            _run("ip", "link", "set", "lo", "up")
            _run("ip", "addr", "replace", f"{SERVER}/32", "dev", "lo")
            for n in range(1, self.count + 1):
                holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"], stdin=subprocess.DEVNULL)
                self.holders.append(holder)
                _wait_for_namespace(holder)
                inside = ("nsenter", f"--net=/proc/{holder.pid}/ns/net")
                _run("ip", "link", "add", f"vs{n}", "type", "veth", "peer", "name", f"vp{n}", "netns", str(holder.pid))
                _run("ip", "addr", "add", f"10.88.{n}.1/24", "dev", f"vs{n}")
                _run("ip", "link", "set", f"vs{n}", "up")
                _run(*inside, "ip", "link", "set", "lo", "up")
                _run(*inside, "ip", "addr", "add", f"{self.address(n)}/24", "dev", f"vp{n}")
                _run(*inside, "ip", "link", "set", f"vp{n}", "up")
                _run(*inside, "ip", "route", "add", "default", "via", f"10.88.{n}.1")
        except BaseException:
            self.close()
            raise

    def namespace(self, n: int) -> str:
        """The path of participant ``n``'s network namespace."""
        return f"/proc/{self.holders[n - 1].pid}/ns/net"

    def chromium(self, n: int, binary: str, nice: int = 5) -> str:
        """A launcher for ``binary`` inside participant ``n``'s namespace (for playwright)."""
        path = self.folder / f"chromium-{n}.sh"
        path.write_text(f'#!/bin/sh\nexec nice -n {nice} nsenter --net={self.namespace(n)} -- {binary} "$@"\n')
        path.chmod(0o755)
        return str(path)

    def limit(self, n: int, rate_kbit: int, loss_percent: int = 0, burst: str = "16kb",
              latency: str = "200ms") -> None:
        """Shape what the server sends participant ``n``: a rate, and UDP loss (percent)."""
        _run("tc", "qdisc", "replace", "dev", f"vs{n}", "root", "tbf", "rate", f"{rate_kbit}kbit", "burst", burst,
             "latency", latency)
        if loss_percent:
            self.losses[n] = loss_percent
            self._drop_rules()

    def lift(self, n: int) -> None:
        """Participant ``n``'s link back to unshaped, lossless."""
        subprocess.run(["tc", "qdisc", "del", "dev", f"vs{n}", "root"], capture_output=True)
        if self.losses.pop(n, None) is not None:
            self._drop_rules()

    def _drop_rules(self) -> None:
        """One table, rewritten whole: a drop rule per lossy participant."""
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
        if not self.losses:
            return
        _run("nft", "add", "table", "inet", TABLE)
        _run("nft", "add", "chain", "inet", TABLE, "out", "{ type filter hook output priority 0 ; }")
        for n, percent in self.losses.items():
            _run("nft", "add", "rule", "inet", TABLE, "out", "ip", "daddr", self.address(n), "meta", "l4proto", "udp",
                 "numgen", "random", "mod", "100", "<", str(percent), "drop")

    def close(self) -> None:
        """Remove rules and links; end the namespaces (their veths go with them)."""
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
        self.losses.clear()
        for n in range(1, len(self.holders) + 1):
            subprocess.run(["ip", "link", "del", f"vs{n}"], capture_output=True)
        for holder in self.holders:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        self.holders.clear()
        subprocess.run(["ip", "addr", "del", f"{SERVER}/32", "dev", "lo"], capture_output=True)
