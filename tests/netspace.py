"""A network namespace of a test's own, joined to the test's namespace by a veth pair.

The test process already runs in the private namespace of ``tests/netns.sh``; this makes a
second one inside it (held by a sleeping process), so a browser can be put where it reaches
some of the test's addresses and not others. Nothing here can reach beyond the test's own
namespace.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path

HOST_IF, PEER_IF = "mnvh0", "mnvp0"


def isolated() -> bool:
    """Whether this process is in a namespace of its own (loopback its only interface), where
    the tests may add interfaces without touching the machine's network."""
    return [name for _, name in socket.if_nameindex()] == ["lo"] and os.geteuid() == 0


class Netns:
    """A namespace with one veth leg: ``host_address`` on the test's side, ``peer_address``
    inside, a /24 between them and no other route."""

    def __init__(self, process: subprocess.Popen[bytes], host_address: str, peer_address: str) -> None:
        self.process = process
        self.host_address = host_address
        self.peer_address = peer_address

    @property
    def path(self) -> str:
        return f"/proc/{self.process.pid}/ns/net"

    @classmethod
    async def create(cls, host_address: str = "10.231.7.1", peer_address: str = "10.231.7.2") -> "Netns":
        process = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
        mine = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{process.pid}/ns/net") == mine:  # until unshare has run
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("unshare --net did not make a namespace")
            await asyncio.sleep(0.01)
        netns = cls(process, host_address, peer_address)
        try:
            _run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF, "netns", str(process.pid))
            _run("ip", "addr", "add", f"{host_address}/24", "dev", HOST_IF)
            _run("ip", "link", "set", HOST_IF, "up")
            netns.run("ip", "link", "set", "lo", "up")
            netns.run("ip", "addr", "add", f"{peer_address}/24", "dev", PEER_IF)
            netns.run("ip", "link", "set", PEER_IF, "up")
        except BaseException:
            await netns.close()
            raise
        return netns

    def run(self, *command: str) -> None:
        """Run a command inside the namespace."""
        _run("nsenter", f"--net={self.path}", *command)

    def wrapper(self, executable: str, folder: Path) -> Path:
        """A script that starts ``executable`` inside the namespace (for playwright's
        ``executable_path``: it talks to the browser over pipes, which cross namespaces)."""
        script = folder / f"in-netns-{Path(executable).name}"
        script.write_text(f'#!/bin/sh\nexec nsenter --net={self.path} {executable} "$@"\n')
        script.chmod(0o755)
        return script

    async def close(self) -> None:
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
        self.process.kill()
        await asyncio.to_thread(self.process.wait)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)
