"""Janus's videoroom as the forwarding baseline: configure, start, and drive it over HTTP.

:class:`JanusServer` writes a minimal configuration to a temporary folder (videoroom
plugin and the HTTP transport only, no STUN/TURN, no event handlers, no admin API) and
starts Debian's ``janus`` in the foreground. :class:`JanusBackend` puts the benchmark's
synthetic aiortc participants in a videoroom: each publisher is one peer connection
offering its mic and camera; each receiver is one subscriber peer connection answering
Janus's offer for every feed it watches (Janus keeps publishing and receiving on separate
peer connections, where meetnow uses one per participant).

Janus never gathers candidates on a loopback interface, so it must run where the
interface named in ``enforce`` (a veth end in a private network namespace, see
``bench/netns.py``) holds the only address it may use.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness.load import Gathering, load_participant
from bench.harness.processes import end, free_port, wait_for_http
from bench.synthetic import EncodedMedia, LatencyStamps
from meeting.media.offer import Offer, TrackSlot

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")


def janus_binary() -> str | None:
    return shutil.which("janus")


def _lib_folder() -> Path:
    if JANUS_LIB.is_dir():
        return JANUS_LIB
    found = sorted(Path("/usr/lib").glob("*/janus/plugins"))
    if found:
        return found[0].parent
    raise RuntimeError("Janus's plugin folder was not found (is the janus package installed?)")


def _others(folder: Path, keep: str) -> str:
    names = sorted(p.name for p in folder.glob("libjanus_*.so"))
    return ",".join(n for n in names if n != keep)


def write_config(folder: Path, *, http_port: int, enforce: str, event_loops: int | None) -> Path:
    """Write janus.jcfg, the HTTP transport's and the videoroom's configuration."""
    lib = _lib_folder()
    loops = f"\n\tevent_loops = {event_loops}" if event_loops else ""
    (folder / "janus.jcfg").write_text(f"""general: {{
\tconfigs_folder = "{folder}"
\tplugins_folder = "{lib / 'plugins'}"
\ttransports_folder = "{lib / 'transports'}"
\tevents_folder = "{lib / 'events'}"
\tloggers_folder = "{lib / 'loggers'}"
\tdebug_level = 3
\tsession_timeout = 120{loops}
}}
certificates: {{
}}
media: {{
\tipv6 = false
}}
nat: {{
\tnice_debug = false
\tice_enforce_list = "{enforce}"
\tignore_mdns = true
\tfull_trickle = false
}}
plugins: {{
\tdisable = "{_others(lib / 'plugins', 'libjanus_videoroom.so')}"
}}
transports: {{
\tdisable = "{_others(lib / 'transports', 'libjanus_http.so')}"
}}
loggers: {{
\tdisable = "{_others(lib / 'loggers', '')}"
}}
events: {{
\tbroadcast = false
}}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
\tjson = "plain"
\tbase_path = "/janus"
\thttp = true
\tip = "127.0.0.1"
\tport = {http_port}
\thttps = false
}}
admin: {{
\tadmin_http = false
\tadmin_https = false
}}
cors: {{
}}
""")
    # No static rooms: each benchmark row creates its own (bitrate 0: no REMB cap;
    # fir_freq 0: no periodic keyframe requests).
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return folder / "janus.jcfg"


class JanusServer:
    """One Janus process with its own configuration folder; ``pid`` for CPU readings."""

    def __init__(self, *, enforce: str, event_loops: int | None) -> None:
        self.enforce = enforce
        self.event_loops = event_loops
        self.folder = Path(tempfile.mkdtemp(prefix="meetnow-bench-janus-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/janus"
        self.process: subprocess.Popen | None = None
        self.log_path = self.folder / "janus.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout: float = 20.0) -> None:
        binary = janus_binary()
        if binary is None:
            raise RuntimeError("janus is not installed (apt-get install -y janus)")
        config = write_config(self.folder, http_port=self.port, enforce=self.enforce, event_loops=self.event_loops)
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [binary, "-C", str(config), "-F", str(self.folder), "-o"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        await wait_for_http(self.url + "/info", self.process, "janus", self.log_path, timeout)

    def stop(self) -> None:
        if self.process is not None:
            end(self.process, signal.SIGINT)
        shutil.rmtree(self.folder, ignore_errors=True)


class JanusError(RuntimeError):
    pass


class Session:
    """One Janus session over the HTTP API, its long poll dispatching events by transaction."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.id: int | None = None
        self.waiting: dict[str, asyncio.Future] = {}
        self.poller: asyncio.Task | None = None

    async def _post(self, path: str, body: dict) -> dict:
        body = {**body, "transaction": body.get("transaction") or uuid.uuid4().hex}
        async with self.http.post(self.url + path, json=body) as response:
            reply = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"{body['janus']}: {reply['error']}")
        return reply

    async def create(self) -> None:
        self.id = (await self._post("", {"janus": "create"}))["data"]["id"]
        self.poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                async with self.http.get(f"{self.url}/{self.id}?maxev=10") as response:
                    events = await response.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.1)
                continue
            for event in events if isinstance(events, list) else [events]:
                future = self.waiting.pop(event.get("transaction", ""), None)
                if future is not None and not future.done():
                    future.set_result(event)

    async def attach(self) -> "Handle":
        reply = await self._post(f"/{self.id}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        return Handle(self, reply["data"]["id"])

    async def destroy(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            await asyncio.gather(self.poller, return_exceptions=True)
        if self.id is not None:
            try:
                await self._post(f"/{self.id}", {"janus": "destroy"})
            except (JanusError, aiohttp.ClientError):
                pass


class Handle:
    def __init__(self, session: Session, handle_id: int) -> None:
        self.session = session
        self.id = handle_id

    async def request(self, body: dict, jsep: dict | None = None, timeout: float = 30.0) -> tuple[dict, dict | None]:
        """A plugin message; returns the plugin's data and the JSEP of its (async) reply."""
        transaction = uuid.uuid4().hex
        message: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        future = asyncio.get_running_loop().create_future()
        self.session.waiting[transaction] = future
        reply = await self.session._post(f"/{self.session.id}/{self.id}", message)
        if reply.get("janus") == "success":  # a synchronous request
            self.session.waiting.pop(transaction, None)
            data = reply["plugindata"]["data"]
            if "error" in data:
                raise JanusError(f"{body.get('request')}: {data['error']}")
            return data, None
        event = await asyncio.wait_for(future, timeout)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return data, event.get("jsep")


_rooms = itertools.count(1000)


class JanusBackend:
    """Runs the benchmark's rooms in a Janus videoroom (a ``Backend`` of bench/harness/rows.py)."""

    def __init__(self, label: str, *, event_loops: int | None, enforce: str, address: str) -> None:
        self.label = label
        self.address = address
        self.server = JanusServer(enforce=enforce, event_loops=event_loops)
        self.http: aiohttp.ClientSession | None = None
        self.admin: Handle | None = None
        self._admin_session: Session | None = None
        self._rooms: dict[str, tuple[int, list[Session]]] = {}

    @property
    def pid(self) -> int:
        return self.server.pid

    def processes(self) -> dict[str, int]:
        return {"janus": self.server.pid}

    async def start(self) -> None:
        await self.server.start()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self._admin_session = Session(self.http, self.server.url)
        await self._admin_session.create()
        self.admin = await self._admin_session.attach()

    async def close(self) -> None:
        if self._admin_session is not None:
            await self._admin_session.destroy()
        if self.http is not None:
            await self.http.close()
        await asyncio.to_thread(self.server.stop)

    async def counters(self, reset_peaks: bool = False) -> dict | None:
        return None

    def errors(self) -> list[str]:
        return []

    async def gather(self, room: str, publishers: int, viewers: int, media: EncodedMedia,
                     stamps: LatencyStamps) -> Gathering:
        """Publishers p0.. each publish (and, in a full room, watch everyone else);
        viewers v.. watch every publisher. When one cannot join, those who did leave."""
        gathering = Gathering()
        try:
            await self._gather(room, publishers, viewers, media, stamps, gathering)
        except Exception:
            await self.disperse(room, gathering)
            raise
        return gathering

    async def _gather(self, room: str, publishers: int, viewers: int, media: EncodedMedia,
                      stamps: LatencyStamps, gathering: Gathering) -> None:
        assert self.http is not None and self.admin is not None
        number = next(_rooms)
        await self.admin.request({
            "request": "create", "room": number, "publishers": max(publishers, 1) + 1,
            "bitrate": 0, "fir_freq": 0, "audiocodec": "opus", "videocodec": "vp8",
            "permanent": False, "is_private": True,
        })
        sessions: list[Session] = []
        self._rooms[room] = (number, sessions)
        feeds: dict[str, int] = {}
        by_name: dict[str, Session] = {}
        for i in range(publishers):
            name = f"p{i}"
            session = Session(self.http, self.server.url)
            await session.create()
            sessions.append(session)
            by_name[name] = session
            handle = await session.attach()
            joined, _ = await handle.request(
                {"request": "join", "ptype": "publisher", "room": number, "display": name})
            feeds[name] = joined["id"]
            person = load_participant(name, media, stamps, self.address)
            gathering.everyone.append(person)
            gathering.publishers.append(person)
            offer = await person.offer_to_publish(("mic", "camera"))
            _, answer = await handle.request(
                {"request": "configure", "audio": True, "video": True}, jsep={"type": "offer", "sdp": offer})
            if answer is None:
                raise JanusError(f"no answer to {name}'s publish offer")
            await person.accept_publish_answer(answer["sdp"])
        names = {feed: name for name, feed in feeds.items()}
        watchers = [(f"p{i}", f"p{i}.sub") for i in range(publishers)] if viewers == 0 else []
        watchers += [(None, f"v{publishers + j}") for j in range(viewers)]
        for own, name in watchers:
            wanted = [feed for pub, feed in feeds.items() if pub != own]
            if not wanted:
                continue
            session = by_name.get(own) if own else None
            if session is None:
                session = Session(self.http, self.server.url)
                await session.create()
                sessions.append(session)
            handle = await session.attach()
            attached, offer = await self._subscribe(handle, number, wanted)
            if offer is None:
                raise JanusError(f"no offer for subscriber {name}")
            slots = tuple(
                TrackSlot(mid=s["mid"], kind=s["type"], source="mic" if s["type"] == "audio" else "camera",
                          direction="receive", participant=names[s["feed_id"]])
                for s in attached["streams"] if s.get("type") in ("audio", "video")
            )
            person = load_participant(name, media, stamps, self.address)
            gathering.everyone.append(person)
            answer = await person.answer(Offer(sdp=offer["sdp"], slots=slots))
            await handle.request({"request": "start"}, jsep={"type": "answer", "sdp": answer})
            for slot in slots:
                if slot.kind == "video":
                    gathering.legs.append((person, slot.participant))

    async def _subscribe(self, handle: Handle, room: int, feeds: list[int]) -> tuple[dict, dict | None]:
        # A feed can be subscribed to once its publisher's peer connection is up.
        deadline = time.monotonic() + 20
        while True:
            try:
                return await handle.request({
                    "request": "join", "ptype": "subscriber", "room": room,
                    "streams": [{"feed": feed} for feed in feeds],
                })
            except JanusError as exc:
                if "No such feed" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def disperse(self, room: str, gathering: Gathering) -> None:
        for person in gathering.everyone:
            await person.close()
        number, sessions = self._rooms.pop(room, (None, []))
        for session in sessions:
            await session.destroy()
        if number is not None and self.admin is not None:
            try:
                await self.admin.request({"request": "destroy", "room": number})
            except JanusError:
                pass


def janus_version() -> str | None:
    binary = janus_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Janus version:"):
            return line.split("(")[-1].rstrip(")")
    return None

