"""meetnow's SFU in a child process, driven over a JSON-lines socket on 127.0.0.1.

A benchmark reads the server's CPU from /proc, so the SFU runs in a process of its own:
``python -m bench.harness.control`` (or a script's own ``--serve`` role, which adds
operations), which builds a :class:`~meeting.media.sfu.Sfu` and calls :func:`serve`.
:class:`SfuProcess` is the benchmark's end; the synthetic participants stay in the
benchmark's process and answer the offers it relays.

One JSON object per line. A request carries an ``id`` and gets ``{"op": "ok", "id"}``
(with fields) or ``{"op": "error", "id", "error"}`` back:

- ``join`` {room, pid, publish}: a participant joins; its offers come back unasked as
  ``{"op": "offer", "room", "pid", "sdp", "slots"}``;
- ``answer`` {room, pid, sdp}: a participant's answer (no reply);
- ``leave`` {room, pid}: it leaves; a room closes when its last participant left;
- ``stats`` {reset_peaks}: ``{"totals"}``, the SFU's counters (``Sfu.stats``);
- ``quit``: close the SFU and end the process;
- and what the script adds (bench/recording.py: ``record``, ``stop-recording``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping

from bench.harness.load import allowed_network
from bench.harness.processes import READY, Child, end, spawn
from meeting import eventloop
from meeting.config import MediaConfig
from meeting.media.offer import Offer, TrackSlot
from meeting.media.peer import Peer
from meeting.media.sfu import Sfu

# An operation a script adds: the request in, the reply's fields out.
Operation = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


# --- the server process ----------------------------------------------------------------------


def bench_sfu(address: str = "127.0.0.1", receive_loss: float = 0.0) -> Sfu:
    """An SFU announcing ``address`` and taking peers from its network, rooms up to 64."""
    media = MediaConfig(announce_addresses=(address,), allowed_peer_networks=(allowed_network(address),),
                        max_participants=64)
    return Sfu(media, receive_loss=receive_loss)


async def serve(sfu: Sfu, operations: Mapping[str, Operation] | None = None) -> None:
    """Drive ``sfu`` from control connections until one says ``quit``.

    Prints ``READY <port>`` once listening. ``operations`` adds requests by name.
    """
    done = asyncio.Event()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _Connection(sfu, dict(operations or {}), writer, done).run(reader)

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    print(READY, server.sockets[0].getsockname()[1], flush=True)
    await done.wait()
    server.close()


class _Connection:
    """One control connection: requests in order, offers sent whenever the SFU makes them."""

    def __init__(self, sfu: Sfu, operations: dict[str, Operation], writer: asyncio.StreamWriter,
                 done: asyncio.Event) -> None:
        self.sfu = sfu
        self.operations = operations
        self.writer = writer
        self.done = done
        self.peers: dict[tuple[str, str], Peer] = {}
        self._lock = asyncio.Lock()  # offers and replies interleave whole lines

    async def run(self, reader: asyncio.StreamReader) -> None:
        while not self.done.is_set():
            line = await reader.readline()
            if not line:
                break
            msg = json.loads(line)
            try:
                reply = await self._handle(msg)
                if reply is not None:
                    await self._send({"op": "ok", "id": msg["id"], **reply})
            except Exception as exc:  # reported to the benchmark, which fails the row
                await self._send({"op": "error", "id": msg.get("id"), "error": repr(exc)})
        self.writer.close()

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            self.writer.write(json.dumps(message).encode() + b"\n")
            await self.writer.drain()

    async def _handle(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        op = msg["op"]
        if op == "join":
            room, pid = msg["room"], msg["pid"]

            async def send_offer(offer: Offer) -> None:
                await self._send({"op": "offer", "room": room, "pid": pid, "sdp": offer.sdp,
                                  "slots": [asdict(s) for s in offer.slots]})

            self.peers[(room, pid)] = await self.sfu.open(room).join(pid, send_offer, publish=msg["publish"])
            return {}
        if op == "answer":
            peer = self.peers.get((msg["room"], msg["pid"]))
            if peer is not None:  # else it left while its answer was on the way
                await peer.accept_answer(msg["sdp"])
            return None
        if op == "leave":
            self.peers.pop((msg["room"], msg["pid"]), None)
            room = self.sfu.room(msg["room"])
            if room is not None:
                await room.leave(msg["pid"])
                if not room.peers:
                    await room.close()
            return {}
        if op == "stats":
            return {"totals": self.sfu.stats(reset_peaks=msg.get("reset_peaks", False))["totals"]}
        if op == "quit":
            await self.sfu.close()
            self.done.set()
            return {}
        if op in self.operations:
            return await self.operations[op](msg)
        raise ValueError(f"unknown operation {op!r}")


# --- the benchmark's end -----------------------------------------------------------------------


class SfuProcess:
    """The SFU's child process and the control connection to it.

    ``argv`` runs the server with this interpreter, e.g. ``["-m", "bench.harness.control"]``.
    Participants joined through it answer their offers through it too.
    """

    def __init__(self, argv: list[str], log: Path | None = None) -> None:
        self.argv = argv
        self.log = log  # the server's stderr (its warnings); None: this process's stderr
        self.errors: list[str] = []  # what the server reported as failed
        self.child: Child | None = None
        self._participants: dict[tuple[str, str], Any] = {}
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    async def start(self) -> None:
        self.child = await asyncio.to_thread(spawn, [sys.executable, *self.argv], self.log)
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self.child.port)
        self._reading = asyncio.ensure_future(self._read(reader))

    async def join(self, room: str, person: Any, publish: Iterable[str]) -> None:
        """Join a synthetic participant; it gets its offers and answers them from here on."""
        person.peer = _RemotePeer(self, room, person.name)
        self._participants[(room, person.name)] = person
        await self.request("join", room=room, pid=person.name, publish=list(publish))

    async def leave(self, room: str, person: Any) -> None:
        await self.request("leave", room=room, pid=person.name)
        self._participants.pop((room, person.name), None)

    async def totals(self, reset_peaks: bool = False) -> dict[str, Any]:
        """The SFU's counters; ``reset_peaks`` restarts its event-loop lag peak."""
        return (await self.request("stats", reset_peaks=reset_peaks))["totals"]

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request and wait (up to 30 s) for its reply; RuntimeError on an error."""
        assert self._writer is not None
        self._next_id += 1
        future = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = future
        self._writer.write(json.dumps({"op": op, "id": self._next_id, **fields}).encode() + b"\n")
        await self._writer.drain()
        return await asyncio.wait_for(future, 30)

    def answer(self, room: str, pid: str, sdp: str) -> None:
        assert self._writer is not None
        self._writer.write(json.dumps({"op": "answer", "room": room, "pid": pid, "sdp": sdp}).encode() + b"\n")

    async def close(self) -> None:
        """Quit the server, or end its process when it does not answer."""
        if self._writer is not None:
            try:
                await self.request("quit")
            except Exception:
                pass  # it is ended below either way
            assert self._reading is not None
            self._reading.cancel()
            self._writer.close()
        if self.child is not None:
            await asyncio.to_thread(end, self.child.process)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            msg = json.loads(line)
            if msg["op"] == "offer":
                person = self._participants.get((msg["room"], msg["pid"]))
                if person is not None:  # else it left while the offer was on the way
                    slots = tuple(TrackSlot(**s) for s in msg["slots"])
                    await person.send_offer(Offer(sdp=msg["sdp"], slots=slots))
                continue
            future = self._waiting.pop(msg.get("id"), None)
            if msg["op"] == "error":
                self.errors.append(msg["error"])
                if future is not None and not future.done():
                    future.set_exception(RuntimeError(msg["error"]))
            elif future is not None and not future.done():
                future.set_result(msg)


class _RemotePeer:
    """Stands in for the server's :class:`~meeting.media.peer.Peer` on the benchmark's side."""

    def __init__(self, control: SfuProcess, room: str, pid: str) -> None:
        self.control = control
        self.room = room
        self.pid = pid

    async def accept_answer(self, sdp: str) -> None:
        self.control.answer(self.room, self.pid, sdp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="meetnow's SFU behind a JSON-lines control socket "
                                                 "(started by the benchmarks)")
    parser.add_argument("--address", default="127.0.0.1", help="the address media is announced on")
    parser.add_argument("--receive-loss", type=float, default=0.0, help="server-side receive loss (test hook)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of this process to this file")
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args(argv)

    async def run() -> None:
        await serve(bench_sfu(args.address, args.receive_loss))

    if args.profile:
        import cProfile

        cProfile.runctx("eventloop.run(run(), loop)", globals(), {"run": run, "loop": args.event_loop},
                        str(args.profile))
    else:
        eventloop.run(run(), args.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
