"""The benchmarks' child processes: started, waited for until they serve, and ended.

A child this repository writes (a benchmark script in a role, the SFU control server)
prints ``READY <port>`` as its first line on stdout once it listens, and stops when its
stdin closes or it is told to; a server someone else wrote (``meetnow serve``, Janus) is
ready when an HTTP URL answers 200. Every server listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
READY = "READY"


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port on ``address`` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class Child:
    process: subprocess.Popen
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid


def spawn(argv: list[str], log: Path | None = None, timeout: float = 30.0) -> Child:
    """Start ``argv`` in the repository's root and wait for its ``READY <port>`` line.

    Its stderr goes to ``log`` (or to ours); its stdin stays open until :func:`end`.
    Raises RuntimeError when it exits or stays silent for ``timeout`` seconds.
    """
    log_file = open(log, "wb") if log is not None else None
    try:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                                   cwd=str(ROOT), bufsize=0)
    finally:
        if log_file is not None:
            log_file.close()  # the child holds its own descriptor
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while b"\n" not in line:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 256)
        if not chunk:  # it exited
            break
        line += chunk
    words = line.split(b"\n", 1)[0].decode(errors="replace").split()
    if len(words) == 2 and words[0] == READY and words[1].isdigit():
        return Child(process, int(words[1]))
    end(process, signal.SIGTERM)  # it never became ready: no clean shutdown to wait for
    where = f"; see {log}" if log is not None else ""
    raise RuntimeError(f"{' '.join(argv[1:3])} did not start{where}")


def end(process: subprocess.Popen, sig: int | None = None, timeout: float = 10.0) -> None:
    """Ask a child to end (close its stdin, or send it ``sig``) and kill it if it has not
    ended within ``timeout`` seconds."""
    if process.poll() is None:
        try:
            if sig is None:
                if process.stdin is not None:
                    process.stdin.close()
            else:
                process.send_signal(sig)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or nothing when it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def wait_for_http(url: str, process: subprocess.Popen, name: str, log: Path, timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers 200 while ``process`` (which serves it) runs.

    Raises RuntimeError, with the end of ``log``, when the process exits first or
    ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited at start:\n{log_tail(log)}")
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer on {url}:\n{log_tail(log)}")
            await asyncio.sleep(0.1)
