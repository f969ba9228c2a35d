"""The front's side of the media workers: placement, signaling relay, events, replacement.

:class:`WorkerPool` has the same face as :class:`~meeting.session.host.Sessions` (connect,
receive, disconnect, recording, close, stats), so the websocket handler does not know
whether meetings live in this process or in workers. Each live meeting lives on exactly one
worker, the least loaded when its first connection arrives, until its last connection goes.

The front keeps every browser's websocket and relays its frames to the meeting's worker
(rather than handing the socket over): TLS and the per-address limits stay in one place,
and when a worker dies the browsers are told to reconnect over the sockets the front still
holds, and meet again on another worker within seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meeting.config import Config
from meeting.events import Bus, PresenceChanged, RecordingReady, RecordingStarted, RecordingStopped, from_dict, to_dict
from meeting.logfmt import kv
from meeting.models import Meeting
from meeting.recording.model import RECORDING
from meeting.recording.service import RecordingRefused, RecordingStatus
from meeting.session.conn import Channel
from meeting.session.messages import CLOSE_GOING_AWAY, CLOSE_RETRY, error
from meeting.session.resume import GRACE as RESUME_GRACE
from meeting.store.base import Store
from meeting.workers.ledger import PresenceLedger
from meeting.workers.pipe import Pipe, PipeClosed

log = logging.getLogger(__name__)

ORPHAN_GRACE = 30.0  # seconds people have to come back before a dead worker's meeting ends
RESTART_DELAYS = (0.2, 1.0, 5.0, 15.0)  # between replacements of a worker that keeps dying
LOG_LOAD_EVERY = 60.0
READY_TIMEOUT = 30.0
REQUEST_TIMEOUT = 15.0


@dataclass(eq=False)
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    pipe: Pipe | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    alive: bool = False
    conns: set[str] = field(default_factory=set)
    meetings: dict[str, int] = field(default_factory=dict)  # meeting id -> its connections here
    recordings: dict[str, str] = field(default_factory=dict)  # recording id -> meeting id
    load: dict[str, Any] = field(default_factory=dict)
    deaths: int = 0


@dataclass(eq=False)
class _Route:
    worker: _Worker
    channel: Channel
    meeting_id: str


class WorkerPool:
    """The front's live meetings, hosted by ``count`` media worker processes."""

    def __init__(self, config: Config, store: Store, bus: Bus, count: int) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        self.workers = [_Worker(i) for i in range(count)]
        self.ledger = PresenceLedger()
        self.orphan_grace = ORPHAN_GRACE
        self._routes: dict[str, _Route] = {}  # connection id -> where it goes
        self._directory: dict[str, _Worker] = {}  # meeting id -> the worker hosting it
        # Where an emptied meeting lived, while pages that dropped may come back to what its
        # session left there (its lock, their resume tokens): meeting id -> (worker, until).
        self._last_home: dict[str, tuple[_Worker, float]] = {}
        self._requests: dict[int, tuple[_Worker, asyncio.Future[dict[str, Any]]]] = {}
        self._next_request = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.restarts = 0
        bus.subscribe(RecordingReady, self._to_meeting)

    # --- life of the workers ---------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each serves."""
        for worker in self.workers:
            await self._spawn(worker)
        await asyncio.gather(*(asyncio.wait_for(w.ready.wait(), READY_TIMEOUT) for w in self.workers))
        self._keep(self._watch_orphans())
        self._keep(self._log_load())

    async def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        worker.ready = asyncio.Event()
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meeting.workers.worker", str(worker.index), str(os.getpid()),
            str(theirs.fileno()), pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.PIPE)
        theirs.close()
        assert worker.process.stdin is not None
        # The configuration, secrets included, goes through a pipe: never a command line.
        worker.process.stdin.write(json.dumps(dataclasses.asdict(self.config)).encode())
        worker.process.stdin.close()
        worker.pipe = await Pipe.over(ours)
        worker.alive = True
        self._keep(self._read(worker, worker.pipe, worker.process))

    async def _read(self, worker: _Worker, pipe: Pipe, process: asyncio.subprocess.Process) -> None:
        try:
            while True:
                self._handle(worker, await pipe.read())
        except PipeClosed:
            pass
        except Exception:
            log.exception("media worker said something unreadable %s", kv(index=worker.index))
        pipe.close()
        if worker.pipe is pipe:
            await self._died(worker, process)

    def _handle(self, worker: _Worker, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "send":
            route = self._routes.get(message["conn"])
            if route is not None and route.worker is worker:
                route.channel.send(message["message"])
        elif op == "close-conn":
            route = self._routes.get(message["conn"])
            if route is not None and route.worker is worker:
                route.channel.close(message["code"], message["reason"])
        elif op == "event":
            self._keep(self._event(worker, from_dict(message["event"])))
        elif op == "load":
            worker.load = message
        elif op == "reply":
            _, future = self._requests.pop(message["req"], (None, None))
            if future is not None and not future.done():
                future.set_result(message)
        elif op == "ready":
            worker.ready.set()
            log.info("media worker serving %s", kv(index=worker.index, pid=message["pid"]))

    async def _event(self, worker: _Worker, event: Any) -> None:
        if isinstance(event, RecordingStarted):
            worker.recordings[event.recording_id] = event.meeting_id
        elif isinstance(event, RecordingStopped):
            worker.recordings.pop(event.recording_id, None)
        elif isinstance(event, PresenceChanged):
            event = self.ledger.passed(event, time.monotonic())
        await self.bus.publish(event)

    async def _died(self, worker: _Worker, process: asyncio.subprocess.Process) -> None:
        """A worker is gone: its browsers reconnect elsewhere, its recordings are settled."""
        worker.alive = False
        code = await process.wait()
        if self._closed:
            return
        worker.deaths += 1
        log.warning("media worker died %s", kv(index=worker.index, code=code, meetings=len(worker.meetings),
                                                 connections=len(worker.conns)))
        now = time.monotonic()
        doomed = set(worker.meetings)
        for conn_id in list(worker.conns):
            route = self._routes.pop(conn_id)
            route.channel.send(error("server-restarted", "The server restarted this meeting; reconnecting."))
            route.channel.close(CLOSE_RETRY, "worker restarted")
        for meeting_id in worker.meetings:
            if self._directory.get(meeting_id) is worker:
                del self._directory[meeting_id]
            self.ledger.orphan(meeting_id, now)
        worker.conns.clear()
        worker.meetings.clear()
        for asker, future in self._requests.values():
            if asker is worker and not future.done():
                future.set_exception(PipeClosed("the meeting's worker died"))
        await self._settle_recordings(worker, doomed)
        await asyncio.sleep(RESTART_DELAYS[min(worker.deaths, len(RESTART_DELAYS)) - 1])
        if not self._closed:
            self.restarts += 1
            await self._spawn(worker)

    async def _settle_recordings(self, worker: _Worker, meetings: set[str]) -> None:
        """What a dead worker was recording is composed from what reached the disk.

        Its "started" events say which recordings; the store also has any whose event it
        had no time to send (the meetings were just taken off the directory, so no new
        recording of theirs can have started yet).
        """
        try:
            for recording in await self.store.recordings_in((RECORDING,)):
                if recording.meeting_id in meetings:
                    worker.recordings.setdefault(recording.id, recording.meeting_id)
        except Exception:
            log.exception("could not look for a dead worker's recordings")
        for recording_id, meeting_id in list(worker.recordings.items()):
            try:
                await self.store.recording_stopped(recording_id, None, None)
                await self.bus.publish(RecordingStopped(meeting_id, recording_id, compose=True))
            except Exception:
                log.exception("could not settle a dead worker's recording")
                continue
            del worker.recordings[recording_id]

    async def close(self) -> None:
        """Tell every worker to close its meetings (browsers hear the server is going), and wait."""
        self._closed = True
        for worker in self.workers:
            if worker.alive and worker.pipe is not None:
                try:
                    worker.pipe.send({"op": "close"})
                except PipeClosed:
                    pass
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                await asyncio.wait_for(worker.process.wait(), 10)
            except asyncio.TimeoutError:
                worker.process.kill()
                await worker.process.wait()
        for route in self._routes.values():
            route.channel.close(CLOSE_GOING_AWAY, "server shutting down")
        self._routes.clear()
        for task in list(self._tasks):
            task.cancel()

    # --- connections (the same face as Sessions) ---------------------------------------------

    def _place(self, meeting_id: str) -> _Worker | None:
        worker = self._directory.get(meeting_id)
        if worker is not None and worker.alive:
            return worker
        serving = [w for w in self.workers if w.alive and w.ready.is_set()]
        if not serving:
            return None
        now = time.monotonic()
        self._last_home = {m: home for m, home in self._last_home.items() if home[1] > now}
        home = self._last_home.pop(meeting_id, None)
        if home is not None and home[0] in serving:
            self._directory[meeting_id] = home[0]
            return home[0]
        # Least loaded: fewest people now (the front counts them exactly), then least CPU.
        worker = min(serving, key=lambda w: (len(w.conns), w.load.get("cpu", 0.0), w.index))
        self._directory[meeting_id] = worker
        return worker

    async def connect(self, meeting: Meeting, conn_id: str, address: str, channel: Channel) -> None:
        if self._closed:
            channel.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        worker = self._place(meeting.id)
        if worker is None or worker.pipe is None:
            channel.send(error("server-restarted", "The server is starting its meetings again; reconnecting."))
            channel.close(CLOSE_RETRY, "no worker")
            return
        self._routes[conn_id] = _Route(worker, channel, meeting.id)
        worker.conns.add(conn_id)
        worker.meetings[meeting.id] = worker.meetings.get(meeting.id, 0) + 1
        self._send(worker, {"op": "connect", "conn": conn_id, "meeting": meeting.id, "address": address})

    async def receive(self, conn_id: str, text: str | bytes) -> None:
        route = self._routes.get(conn_id)
        if route is not None:
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            self._send(route.worker, {"op": "receive", "conn": conn_id, "text": text})

    async def disconnect(self, conn_id: str) -> None:
        route = self._routes.pop(conn_id, None)
        if route is None:
            return
        worker = route.worker
        worker.conns.discard(conn_id)
        left = worker.meetings.get(route.meeting_id, 1) - 1
        if left > 0:
            worker.meetings[route.meeting_id] = left
        else:
            worker.meetings.pop(route.meeting_id, None)
            if self._directory.get(route.meeting_id) is worker:
                del self._directory[route.meeting_id]
                self._last_home[route.meeting_id] = (worker, time.monotonic() + RESUME_GRACE)
        self._send(worker, {"op": "disconnect", "conn": conn_id})

    def _send(self, worker: _Worker, message: dict[str, Any]) -> None:
        if worker.alive and worker.pipe is not None:
            try:
                worker.pipe.send(message)
            except PipeClosed:
                pass  # its reader notices, and the browsers are told to reconnect

    # --- commands ----------------------------------------------------------------------------

    async def recording(self, meeting: Meeting, start: bool) -> RecordingStatus:
        """Start or stop a meeting's recording on its worker; RecordingRefused when nobody is there."""
        worker = self._directory.get(meeting.id)
        if worker is None or not worker.alive:
            if start:
                raise RecordingRefused("empty", "Nobody is in the meeting: recording starts once people have joined.")
            return RecordingStatus(meeting.id, False, not meeting.e2ee)
        self._next_request += 1
        req = self._next_request
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[req] = (worker, future)
        self._send(worker, {"op": "recording", "req": req, "meeting": meeting.id, "start": start})
        try:
            reply = await asyncio.wait_for(future, REQUEST_TIMEOUT)
        except (asyncio.TimeoutError, PipeClosed):
            self._requests.pop(req, None)
            raise RecordingRefused("unavailable", "The meeting's server did not answer; try again.") from None
        if "refused" in reply:
            raise RecordingRefused(reply["refused"]["code"], reply["refused"]["message"])
        status = reply["status"]
        since = datetime.fromisoformat(status["since"]) if status["since"] else None
        return RecordingStatus(meeting.id, status["active"], not meeting.e2ee, since=since,
                               recording_id=status["recording_id"])

    async def _to_meeting(self, event: RecordingReady) -> None:
        """A recording is ready: its meeting's hosts see the link, wherever it lives."""
        worker = self._directory.get(event.meeting_id)
        if worker is not None:
            self._send(worker, {"op": "event", "event": to_dict(event)})

    async def watch_disk(self) -> None:
        """Each worker watches the disk for its own recordings; nothing to do here."""

    def session(self, meeting_id: str) -> None:
        """Live sessions are in the workers, not here."""
        return None

    # --- background --------------------------------------------------------------------------

    async def _watch_orphans(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for ended in self.ledger.expired(self.orphan_grace, time.monotonic()):
                await self.bus.publish(ended)

    async def _log_load(self) -> None:
        while True:
            await asyncio.sleep(LOG_LOAD_EVERY)
            for line in self.load_lines():
                log.info("media worker load %s", line)

    def load_lines(self) -> list[str]:
        """One key=value summary per worker: meetings, people, CPU, event-loop lag."""
        return [kv(index=w.index, pid=w.load.get("pid", 0), alive=w.alive, meetings=len(w.meetings),
                   connections=len(w.conns), participants=w.load.get("participants", 0),
                   cpu=w.load.get("cpu", 0.0), lag_ms=w.load.get("lag_ms", 0.0)) for w in self.workers]

    async def process_stats(self) -> list[dict[str, Any]]:
        """Each live worker's own media figures, as its last report said (for the metrics)."""
        return [w.load["process"] for w in self.workers if w.alive and "process" in w.load]

    def stats(self) -> dict[str, Any]:
        """Totals over the workers, and each worker's own load (as its last report said)."""
        workers = [{"index": w.index, "alive": w.alive, "meetings": len(w.meetings), "connections": len(w.conns),
                    **{k: v for k, v in w.load.items() if k not in ("op", "index", "process", "meetings",
                                                                      "connections")}}
                   for w in self.workers]
        return {"meetings": len(self._directory),
                "participants": sum(w.get("participants", 0) for w in workers),
                "waiting": sum(w.get("waiting", 0) for w in workers),
                "recording": sum(w.get("recording", 0) for w in workers),
                "connections": len(self._routes), "restarts": self.restarts, "workers": workers}

    def _keep(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
