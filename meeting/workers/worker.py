"""A media worker process: the live meetings placed on it, on its own event loop and core.

Started by the front (:mod:`meeting.workers.pool`) as ``python -m meeting.workers.worker
INDEX PARENT_PID FD``, with the configuration as JSON on stdin and one end of a socket pair
as FD. It hosts a :class:`~meeting.session.host.Sessions` over its own SFU (its own ICE
ports), captures recordings of its meetings (composing is the front's), and relays its
bus's events to the front. It dies with the front (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from datetime import datetime, timezone
from typing import Any

from meeting.config import Config, parse_config
from meeting.events import Bus, PresenceChanged, RecordingStarted, RecordingStopped, from_dict, to_dict
from meeting import eventloop, logsetup
from meeting.lifetime import die_with_parent
from meeting.logfmt import kv
from meeting.looplag import LoopLag
from meeting.metrics import process_stats
from meeting.media.sfu import Sfu
from meeting.recording.service import RecordingRefused, RecordingService
from meeting.service import MeetingService
from meeting.session.context import context_for, turn_credentials
from meeting.session.host import Sessions
from meeting.session.relay import RelayedConnections
from meeting.store import make_store
from meeting.workers.load import LoadMeter
from meeting.workers.pipe import Pipe, PipeClosed

log = logging.getLogger("meeting.workers.worker")  # not "__main__" when run with -m

LOAD_EVERY = 1.0  # seconds between load reports to the front
RELAYED = (PresenceChanged, RecordingStarted, RecordingStopped)


class PipeChannel:
    """A connection's channel, as seen from a worker: messages go back through the pipe."""

    def __init__(self, pipe: Pipe, conn_id: str) -> None:
        self.pipe = pipe
        self.conn_id = conn_id

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.pipe.send({"op": "send", "conn": self.conn_id, "message": message})
        except PipeClosed:
            pass  # the front is gone; this process is about to end too

    def close(self, code: int, reason: str) -> None:
        try:
            self.pipe.send({"op": "close-conn", "conn": self.conn_id, "code": code, "reason": reason})
        except PipeClosed:
            pass


class WorkerSide:
    """Serves the front's requests: signaling relayed per connection, recording commands, events."""

    def __init__(self, pipe: Pipe, sessions: Sessions, meetings: MeetingService) -> None:
        self.pipe = pipe
        self.sessions = sessions
        self.meetings = meetings
        self.relayed = RelayedConnections(sessions, meetings.get, lambda m: PipeChannel(pipe, m["conn"]))
        self._tasks: set[asyncio.Task[None]] = set()

    async def relay(self, event: Any) -> None:
        """A bus event of this process that the front must hear (presence, recordings)."""
        self.pipe.send({"op": "event", "event": to_dict(event)})

    async def serve(self) -> None:
        """Until the front says ``close`` or goes away."""
        while True:
            try:
                message = await self.pipe.read()
            except PipeClosed:
                return
            op = message["op"]
            if op in ("connect", "receive", "disconnect"):
                self.relayed.handle(message)
            elif op == "recording":
                self._spawn(self._recording(message))
            elif op == "event":
                self._spawn(self.sessions.context.bus.publish(from_dict(message["event"])))
            elif op == "close":
                return

    async def _recording(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"op": "reply", "req": message["req"]}
        meeting = await self.meetings.get(message["meeting"])
        try:
            if meeting is None:
                raise RecordingRefused("empty", "No such meeting.")
            status = await self.sessions.recording(meeting, message["start"])
            reply["status"] = {"active": status.active, "recording_id": status.recording_id,
                               "since": status.since.isoformat() if status.since else None}
        except RecordingRefused as exc:
            reply["refused"] = {"code": exc.code, "message": str(exc)}
        self.pipe.send(reply)

    async def report_load(self, meter: LoadMeter, lag: LoopLag, index: int) -> None:
        """Tell the front how busy this worker is, every LOAD_EVERY seconds."""
        while True:
            await asyncio.sleep(LOAD_EVERY)
            cpu = meter.sample()
            self.pipe.send({"op": "load", "index": index, "pid": os.getpid(), "cpu": round(cpu, 3),
                            "lag_ms": round(lag.worst() * 1000, 1), **self.sessions.stats(),
                            "process": process_stats(self.sessions.context.sfu, lag, f"worker-{index}")})

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


async def run(config: Config, index: int, fd: int) -> None:
    """The worker's life: open the store, serve the front, close everything at the end."""
    pipe = await Pipe.over(socket.socket(fileno=fd))
    store = make_store(config.store)
    await store.open()  # the front has migrated it already
    sfu = Sfu(config.media, turn=turn_credentials(config))
    bus = Bus()
    meetings = MeetingService(store, config.server.public_url, _utc_now)
    recordings = RecordingService(config, store, bus)  # capture only: composing is the front's
    sessions = Sessions(context_for(config, sfu=sfu, meetings=meetings, bus=bus, recordings=recordings,
                                    clock=_utc_now))
    side = WorkerSide(pipe, sessions, meetings)
    for kind in RELAYED:
        bus.subscribe(kind, side.relay)
    meter, lag = LoadMeter(), LoopLag()
    background = [asyncio.ensure_future(lag.run()), asyncio.ensure_future(side.report_load(meter, lag, index)),
                  asyncio.ensure_future(sessions.watch_disk())]
    pipe.send({"op": "ready", "index": index, "pid": os.getpid()})
    log.info("media worker ready %s", kv(index=index, pid=os.getpid()))
    try:
        await side.serve()
    finally:
        await sessions.close()
        await recordings.close()
        await sfu.close()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        try:
            await pipe.drain()
        except PipeClosed:
            pass
        pipe.close()
        await store.close()


def main(argv: list[str]) -> int:
    """``python -m meeting.workers.worker INDEX PARENT_PID FD`` (config as JSON on stdin)."""
    index, parent_pid, fd = (int(a) for a in argv[1:4])
    die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group: the front decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = parse_config(json.loads(sys.stdin.read()))
    logsetup.configure(config.log, process=f"worker-{index}")
    eventloop.run(run(config, index, fd), config.server.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
