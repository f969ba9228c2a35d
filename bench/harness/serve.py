"""``meetnow serve`` as a benchmark server: the real front and its media worker processes.

:class:`ServeBackend` starts ``meetnow serve`` with a temporary configuration
(``server.workers`` = N, store and recordings in a temporary folder, media announced on
the benchmark's address) and puts the synthetic participants in its meetings the way the
meeting page does: a meeting minted over the HTTP API, then per participant a signaling
websocket (``join``, the server's ``offer`` answered with ``answer``, ``leave``).

With one worker everything runs in the one process; with more, each live meeting runs on
one worker process (its own event loop, UDP ports and SFU) and the front only relays
signaling. The server's CPU is the front's and each worker's, read from /proc: the
workers are the front's children running ``meeting.workers.worker``.

Every participant signals from its own loopback address (127.77.x.y, all of 127.0.0.0/8
is local): the server budgets joins and mints per client address, and two dozen
participants from one address would be throttled, as a crowd behind one address would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import aiohttp

from bench.harness.load import Gathering, allowed_network, gather_people
from bench.harness.processes import ROOT, end, free_port, wait_for_http
from bench.synthetic import EncodedMedia, LatencyStamps

WORKER_MODULE = "meeting.workers.worker"
_sources = itertools.count(1)


def meetnow_command() -> list[str]:
    """The ``meetnow`` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "meetnow"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from web.cli import main; sys.exit(main())"]


def next_source_address() -> str:
    """A loopback address no participant of this run signaled from yet."""
    n = next(_sources)
    return f"127.77.{(n >> 8) & 255}.{n & 255 or 1}"


def worker_pids(front: int) -> dict[int, int]:
    """The media workers of a front process: worker index -> pid (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # it ended meanwhile
        parent = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
        if parent == str(front) and WORKER_MODULE in argv:
            at = argv.index(WORKER_MODULE)
            if at + 1 < len(argv) and argv[at + 1].isdigit():
                found[int(argv[at + 1])] = int(entry.name)
    return found


class _Signaling:
    """One participant's signaling websocket: it relays offers and answers, names on both sides.

    The server names participants by id; the rows name them by the name they joined with,
    so the receive slots of an offer are renamed before the participant answers it.
    """

    def __init__(self, person: Any, url: str, report: Callable[[str], None]) -> None:
        self.person = person
        self.url = url
        self.report = report  # where a socket the server closed mid-row is reported
        self.names: dict[str, str] = {}  # participant id -> name
        self.welcomed = asyncio.Event()
        self.leaving = False
        self.closed_because = ""
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reading: asyncio.Task[None] | None = None

    async def join(self, publish: list[str]) -> None:
        """Connect, join and wait for the welcome (RuntimeError when the server refuses)."""
        connector = aiohttp.TCPConnector(local_addr=(next_source_address(), 0))
        self._http = aiohttp.ClientSession(connector=connector)
        self._ws = await self._http.ws_connect(self.url)
        self._reading = asyncio.ensure_future(self._read())
        await self._ws.send_json({"type": "join", "name": self.person.name, "publish": publish})
        waiting = asyncio.ensure_future(self.welcomed.wait())
        await asyncio.wait([waiting, self._reading], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not self.welcomed.is_set():
            waiting.cancel()
            raise RuntimeError(f"{self.person.name} was not welcomed: {self.closed_because or 'no answer in 30 s'}")

    async def accept_answer(self, sdp: str) -> None:
        """The participant's answer to the server's latest offer (its ``peer`` in the load)."""
        if self.leaving or self._ws is None or self._ws.closed:
            return  # an offer that crossed its goodbye: nobody waits for this answer
        try:
            await self._ws.send_json({"type": "answer", "sdp": sdp})
        except ConnectionError:
            if not self.leaving:
                raise

    async def _read(self) -> None:
        assert self._ws is not None
        async for frame in self._ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            message = frame.json()
            kind = message["type"]
            if kind == "welcome":
                for person in [message["you"], *message["participants"]]:
                    self.names[person["id"]] = person["name"]
                self.welcomed.set()
            elif kind in ("participant-joined", "participant-updated"):
                self.names[message["participant"]["id"]] = message["participant"]["name"]
            elif kind == "offer":
                slots = [SimpleNamespace(**{**slot, "participant": self.names.get(slot["participant"],
                                                                                  slot["participant"])})
                         for slot in message["slots"]]
                await self.person.send_offer(SimpleNamespace(sdp=message["sdp"], slots=slots))
            elif kind == "error":
                self.closed_because = f"{message['code']}: {message['message']}"
        if not self.closed_because:
            self.closed_because = f"socket closed ({self._ws.close_code})"
        if not self.leaving:  # the server ended it (a timeout, a missed websocket pong on a busy machine)
            self.report(f"{self.person.name}: the server closed its signaling socket: {self.closed_because}")

    async def leave(self) -> None:
        """Say goodbye and close the socket."""
        self.leaving = True
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.send_json({"type": "leave"})
                await self._ws.close()
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)
        if self._http is not None:
            await self._http.close()


class ServeBackend:
    """``meetnow serve`` with ``workers`` media workers (a ``Backend`` of bench/harness/rows.py)."""

    def __init__(self, address: str, workers: int, log: Path | None = None, event_loop: str = "uvloop") -> None:
        self.address = address
        self.workers = workers
        self.event_loop = event_loop
        self.label = f"meetnow serve, {workers} worker{'s' if workers > 1 else ''}"
        self.folder = Path(tempfile.mkdtemp(prefix="meetnow-bench-serve-"))
        self.log = log or self.folder / "meetnow.log"
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._signaling: dict[str, list[_Signaling]] = {}
        self._errors: list[str] = []

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def processes(self) -> dict[str, int]:
        """The front, and each media worker when there are several (one: all in the front)."""
        found = {"front" if self.workers > 1 else "meetnow": self.pid}
        if self.workers > 1:
            found.update({f"worker {i}": pid for i, pid in sorted(worker_pids(self.pid).items())})
        return found

    def config_text(self) -> str:
        """The temporary configuration: loopback HTTP, media on the benchmark's address,
        rooms up to 64, no per-address connection cap (every participant is local)."""
        return (
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\npublic_url = "{self.origin}"\n'
            f'workers = {self.workers}\nmax_connections_per_address = 0\nevent_loop = "{self.event_loop}"\n\n'
            f'[store]\npath = "{self.folder / "meetnow.sqlite3"}"\n\n'
            f'[recordings]\nfolder = "{self.folder / "recordings"}"\n\n'
            f'[media]\nannounce_addresses = ["{self.address}"]\n'
            f'allowed_peer_networks = ["{allowed_network(self.address)}"]\nmax_participants = 64\n'
        )

    async def start(self, timeout: float = 30.0) -> None:
        config = self.folder / "meetnow.toml"
        config.write_text(self.config_text())
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(meetnow_command() + ["serve", "--config", str(config)], cwd=str(ROOT),
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            await wait_for_http(self.origin + "/healthz", self.process, "meetnow serve", self.log, timeout)
            # /healthz answers once the front serves, which is after every worker said it is ready.
            running = len(worker_pids(self.pid))
            if self.workers > 1 and running != self.workers:
                raise RuntimeError(f"meetnow serve runs {running} media workers, not {self.workers}")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self.process is not None:
            await asyncio.to_thread(end, self.process, signal.SIGTERM)
        shutil.rmtree(self.folder, ignore_errors=True)

    async def counters(self, reset_peaks: bool = False) -> dict | None:
        return None  # the SFU's own counters are inside the workers; /proc says what they cost

    def errors(self) -> list[str]:
        """What went wrong since the last call: sockets the server closed, offers not answered."""
        errors, self._errors = self._errors, []
        for joined in self._signaling.values():
            for signaling in joined:
                errors += [f"{signaling.person.name}: answering: {e!r}" for e in signaling.person.errors]
                signaling.person.errors.clear()
        return errors

    async def _mint(self) -> str:
        """A new meeting's signaling URL."""
        connector = aiohttp.TCPConnector(local_addr=(next_source_address(), 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.post(self.origin + "/api/meetings", json={"title": "Benchmark"}) as response:
                if response.status != 201:
                    raise RuntimeError(f"minting a meeting: HTTP {response.status}: {await response.text()}")
                meeting_id = (await response.json())["id"]
        return f"ws://127.0.0.1:{self.port}/m/{meeting_id}/ws"

    async def gather(self, room: str, publishers: int, viewers: int, media: EncodedMedia,
                     stamps: LatencyStamps) -> Gathering:
        """A meeting of its own for ``room``: publishers p0.. publish mic and camera, viewers
        v.. only watch; all see everyone. When one cannot join, those who did leave."""
        url = await self._mint()
        joined: list[_Signaling] = []
        self._signaling[room] = joined

        async def join(person: Any, sources: list[str]) -> None:
            signaling = _Signaling(person, url, lambda error: self._errors.append(error))
            person.peer = signaling
            joined.append(signaling)
            await signaling.join(sources)

        return await gather_people(room, publishers, viewers, media, stamps, self.address, join, self.disperse)

    async def disperse(self, room: str, gathering: Gathering) -> None:
        """Everyone leaves and closes."""
        leaving = self._signaling.pop(room, [])
        for signaling in leaving:  # before anyone goes, so that the offers others get go unanswered
            signaling.leaving = True
        for signaling in leaving:
            await signaling.leave()
        for person in gathering.everyone:
            await person.close()
