"""Debian's coturn, started by a test in its shared-secret mode, on a temporary config."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"
SECRET = "test-static-auth-secret"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@dataclass(frozen=True)
class Coturn:
    host: str
    port: int
    secret: str
    log: Path

    def url(self, transport: str = "udp") -> str:
        return f"turn:{self.host}:{self.port}?transport={transport}"


@asynccontextmanager
async def coturn(folder: Path, host: str = "127.0.0.1", relay_ip: str = "127.0.0.1",
                 secret: str = SECRET) -> AsyncIterator[Coturn]:
    """coturn listening on ``host`` (UDP and TCP), relaying from ``relay_ip``; stopped after."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    relay_low = 20000 + port % 20000  # a range of its own, so parallel runs need not collide
    log = folder / "turnserver.log"
    (folder / "turnserver.conf").write_text("\n".join([
        f"listening-ip={host}",
        f"listening-port={port}",
        f"relay-ip={relay_ip}",
        f"min-port={relay_low}",
        f"max-port={relay_low + 200}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        "realm=meetnow.test",
        # The server's media listens on loopback in these tests; coturn refuses loopback
        # peers unless told (a deployment never sets this).
        "allow-loopback-peers",
        "no-cli",
        "no-tls",
        "no-dtls",
        "fingerprint",
        "verbose",
        f"log-file={log}",
        "simple-log",
        f"pidfile={folder / 'turnserver.pid'}",
        f"userdb={folder / 'turndb.sqlite'}",
        "",
    ]))
    process = subprocess.Popen([TURNSERVER, "-c", str(folder / "turnserver.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await _until_listening(host, port, process)
        yield Coturn(host, port, secret, log)
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


async def _until_listening(host: str, port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"turnserver exited with {process.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError("turnserver did not start listening")
        await asyncio.sleep(0.05)
