"""What the hostile-client tests drive: a real ``meetnow serve`` process, its footprint, and
raw signaling sockets from chosen loopback addresses (each a different client to the server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from tests.conftest import wait_for
from tests.servers import free_port


@dataclass
class Footprint:
    """Resident memory, open file descriptors and CPU time so far of the server and its workers."""

    rss_kib: int
    fds: int
    cpu_seconds: float

    def __str__(self) -> str:
        return f"RSS {self.rss_kib / 1024:.1f} MiB, {self.fds} fds, CPU {self.cpu_seconds:.1f} s"


class MeetnowProcess:
    """``meetnow serve`` as a subprocess on a loopback port, its log in a file."""

    def __init__(self, folder: Path, workers: int = 1, **media: object) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "server.log"
        media_lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in media.items())
        self.config_path = folder / "meetnow.toml"
        self.config_path.write_text(
            f'[server]\nport = {self.port}\npublic_url = "{self.url}"\nworkers = {workers}\n'
            f'[store]\npath = "{folder / "store.sqlite3"}"\n'
            f'[recordings]\nfolder = "{folder / "recordings"}"\nmin_free_mb = 0\n'
            f'[media]\nannounce_addresses = ["127.0.0.1"]\nallowed_peer_networks = ["127.0.0.0/8"]\n'
            + media_lines)
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        log = self.log_path.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from web.cli import main; raise SystemExit(main())",
            "serve", "--config", str(self.config_path),
            cwd=self.folder, stdout=log, stderr=log)
        log.close()

        async def healthy() -> bool:
            assert self.process is not None
            assert self.process.returncode is None, self.log()
            try:
                async with http.get(f"{self.url}/healthz") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_for(healthy, timeout=20, interval=0.1)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        """The server's process and its children (media workers, composers)."""
        assert self.process is not None
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{pid}/task"):
                    todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        return found

    def footprint(self) -> Footprint:
        """Resident memory (VmRSS of /proc/PID/status), open fds (/proc/PID/fd) and CPU time
        (utime + stime of /proc/PID/stat), summed."""
        rss = fds = ticks = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                rss += int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
                fds += len(os.listdir(f"/proc/{pid}/fd"))
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(stat[11]) + int(stat[12])
        return Footprint(rss, fds, ticks / os.sysconf("SC_CLK_TCK"))

    async def mint(self, http: aiohttp.ClientSession, title: str) -> dict[str, Any]:
        """A new meeting over the API: its id, url and host_url."""
        async with http.post(f"{self.url}/api/meetings", json={"title": title}) as response:
            assert response.status == 201, await response.text()
            minted: dict[str, Any] = await response.json()
            return minted

    def socket_url(self, meeting_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/m/{meeting_id}/ws"


def host_key(minted: dict[str, Any]) -> str:
    return str(minted["host_url"]).split("#host=")[1]


@dataclass
class Client:
    """A raw signaling socket and what came back on it; ``close_code`` once the server closed it."""

    ws: aiohttp.ClientWebSocketResponse
    inbox: list[dict[str, Any]] = field(default_factory=list)  # everything received, in order
    unread: list[dict[str, Any]] = field(default_factory=list)  # not yet taken by next()
    received_bytes: int = 0
    close_code: int | None = None
    reader: asyncio.Task[None] | None = None

    def start(self) -> "Client":
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                self.received_bytes += len(frame.data.encode())
                message = json.loads(frame.data)
                self.inbox.append(message)
                self.unread.append(message)
        self.close_code = self.ws.close_code

    @property
    def closed(self) -> bool:
        return self.reader is not None and self.reader.done()

    def kinds(self) -> list[str]:
        return [m["type"] for m in self.inbox]

    def errors(self) -> list[str]:
        return [m["code"] for m in self.inbox if m["type"] == "error"]

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def next(self, *kinds: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first unread message of one of ``kinds``."""
        await wait_for(lambda: any(m["type"] in kinds for m in self.unread) or self.closed, timeout)
        for i, message in enumerate(self.unread):
            if message["type"] in kinds:
                return self.unread.pop(i)
        raise AssertionError(f"closed ({self.close_code}) without {kinds}: {self.inbox}")

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reader, 5)


class Clients:
    """Sockets from several loopback addresses: one aiohttp session per source address."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self.opened: list[Client] = []

    def _session(self, address: str) -> aiohttp.ClientSession:
        if address not in self._sessions:
            connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0, force_close=True)
            self._sessions[address] = aiohttp.ClientSession(connector=connector)
        return self._sessions[address]

    async def open(self, url: str, address: str = "127.0.0.1") -> Client:
        ws = await self._session(address).ws_connect(url, heartbeat=None, autoping=True)
        client = Client(ws).start()
        self.opened.append(client)
        return client

    async def join(self, url: str, name: str, address: str = "127.0.0.1", **fields: Any) -> Client:
        client = await self.open(url, address)
        await client.send({"type": "join", "name": name, **fields})
        return client

    async def close(self) -> None:
        for client in self.opened:
            if not client.ws.closed:
                with contextlib.suppress(Exception):
                    await client.ws.close()
        for session in self._sessions.values():
            await session.close()


@contextlib.asynccontextmanager
async def clients() -> AsyncIterator[Clients]:
    pool = Clients()
    try:
        yield pool
    finally:
        await pool.close()


def address(n: int) -> str:
    """The n-th client address, 127.1.x.y: a different client for the server's per-address limits."""
    return f"127.1.{n // 250}.{n % 250 + 1}"
