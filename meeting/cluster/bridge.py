"""Any node takes a meeting's websocket; the node hosting the meeting serves it.

:class:`ClusterMeetings` has the face of :class:`~meeting.session.host.LiveMeetings`. For a
meeting this node hosts (per the directory) it hands connections to its own live meetings
(sessions here, or its media workers); for one hosted elsewhere it relays the connection's
messages to that node over Redis pub/sub, in the same ``connect``/``receive``/``disconnect``
vocabulary media workers use, and passes what comes back to the local websocket. This is
LiveKit's signaling bridge; media goes straight to the hosting node.

When a node dies, the sockets relayed to it are closed with the retry code, so the browsers
rejoin and the meeting starts again on a live node. When Redis restarts, live meetings go on
(their media never touched it) and each node re-makes its heartbeat and leases.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from meeting.events import Bus, RecordingReady, from_dict, to_dict
from meeting.logfmt import kv
from meeting.models import Meeting
from meeting.recording.service import RecordingRefused, RecordingStatus
from meeting.cluster.directory import RENEW, Directory
from meeting.cluster.nodes import HEARTBEAT, Nodes
from meeting.session.conn import Channel
from meeting.session.host import LiveMeetings
from meeting.session.messages import CLOSE_RETRY, error
from meeting.session.relay import MeetingLookup, RelayedConnections

log = logging.getLogger(__name__)

CHANNEL = "meetnow:to:"  # + node id: what other nodes send this one
REQUEST_TIMEOUT = 15.0
RETRY = 1.0  # seconds before trying Redis again after it failed


@dataclass(eq=False)
class _Remote:
    node: str
    channel: Channel
    meeting_id: str


class _Outbound:
    """Messages to one node, published in order by one task (Channel.send never waits)."""

    def __init__(self, redis: Redis, node: str) -> None:
        self.redis = redis
        self.channel = CHANNEL + node
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run())

    def put(self, message: dict[str, Any]) -> None:
        self.queue.put_nowait(json.dumps(message, separators=(",", ":")))

    async def _run(self) -> None:
        while True:
            data = await self.queue.get()
            try:
                await self.redis.publish(self.channel, data)
            except RedisError as exc:  # lost: the page's pings notice and it rejoins
                log.warning("cluster message not sent %s", kv(error=type(exc).__name__))


class RelayChannel:
    """A connection's channel on the hosting node: the way back to the node holding its socket."""

    def __init__(self, outbound: _Outbound, conn_id: str) -> None:
        self.outbound = outbound
        self.conn_id = conn_id

    def send(self, message: dict[str, Any]) -> None:
        self.outbound.put({"op": "send", "conn": self.conn_id, "message": message})

    def close(self, code: int, reason: str) -> None:
        self.outbound.put({"op": "close-conn", "conn": self.conn_id, "code": code, "reason": reason})


class ClusterMeetings:
    """Live meetings across the nodes that share one Redis."""

    def __init__(self, local: LiveMeetings, redis: Redis, node_id: str, lookup: MeetingLookup, bus: Bus) -> None:
        self.local = local
        self.redis = redis
        self.node_id = node_id
        self.nodes = Nodes(redis, node_id, CHANNEL)
        self.directory = Directory(redis, node_id)
        self.relayed = RelayedConnections(local, lookup, self._channel_back)
        self._relayed_from: dict[str, tuple[str, str]] = {}  # served here -> (node with its socket, meeting)
        self._remote: dict[str, _Remote] = {}  # socket held here -> its meeting's node
        self._local: dict[str, str] = {}  # socket held here, meeting hosted here -> meeting id
        self._hosted: dict[str, int] = {}  # meeting hosted here -> its connections (local or relayed)
        self._outbound: dict[str, _Outbound] = {}
        self._requests: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_request = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.bus = bus
        bus.subscribe(RecordingReady, self._recording_ready)

    # --- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.local.start()
        await self._beat()
        self._tasks += [asyncio.ensure_future(self._listen()), asyncio.ensure_future(self._keep_alive())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for remote in self._remote.values():
            remote.channel.close(CLOSE_RETRY, "server shutting down")
        self._remote.clear()
        await self.local.close()
        for meeting_id in list(self._hosted):
            try:
                await self.directory.release(meeting_id)
            except RedisError:
                break
        for outbound in self._outbound.values():
            outbound.task.cancel()

    async def _beat(self) -> None:
        stats = self.local.stats()
        await self.nodes.beat({"participants": stats.get("participants", 0), "meetings": stats.get("meetings", 0)})

    async def _keep_alive(self) -> None:
        """Heartbeat, leases, and noticing dead nodes: every HEARTBEAT seconds."""
        renewed = 0.0
        while True:
            try:
                await self._beat()
                dead = await self.nodes.look()
                now = asyncio.get_running_loop().time()
                if now - renewed >= RENEW:
                    await self.directory.renew(list(self._hosted))
                    renewed = now
                if dead:
                    log.warning("cluster nodes gone %s", kv(nodes=",".join(sorted(dead))))
                    self._bury(dead)
            except RedisError as exc:
                log.warning("cluster heartbeat failed %s", kv(error=type(exc).__name__))
            await asyncio.sleep(HEARTBEAT)

    def _bury(self, dead: set[str]) -> None:
        """Connections that depended on a node that is gone."""
        for conn_id, remote in list(self._remote.items()):
            if remote.node in dead:
                del self._remote[conn_id]
                remote.channel.send(error("server-restarted", "The server hosting this meeting went away; reconnecting."))
                remote.channel.close(CLOSE_RETRY, "node gone")
        for conn_id, (node, _) in list(self._relayed_from.items()):
            if node in dead:
                self._handle_disconnect(conn_id)

    # --- connections -----------------------------------------------------------------------

    async def connect(self, meeting: Meeting, conn_id: str, address: str, channel: Channel) -> None:
        try:
            owner = await self._claim(meeting)
        except RedisError:
            channel.send(error("server-restarted", "The server cannot reach its coordinator; reconnecting."))
            channel.close(CLOSE_RETRY, "no coordinator")
            return
        if owner == self.node_id:
            self._local[conn_id] = meeting.id
            self._hosted[meeting.id] = self._hosted.get(meeting.id, 0) + 1
            await self.local.connect(meeting, conn_id, address, channel)
            return
        self._remote[conn_id] = _Remote(owner, channel, meeting.id)
        self._to(owner).put({"op": "connect", "conn": conn_id, "meeting": meeting.id, "address": address,
                             "from": self.node_id})

    async def _claim(self, meeting: Meeting) -> str:
        """The node to host ``meeting``: its live host, else the least loaded node."""
        alive = set(self.nodes.alive)
        current = await self.directory.owner(meeting.id)
        if current is not None and current != self.node_id:
            if await self.nodes.gone(current):
                # Died since the last look (its browsers are rejoining now): move the meeting at once.
                if current in alive:
                    log.warning("cluster nodes gone %s", kv(nodes=current))
                    self.nodes.forget(current)
                    self._bury({current})
                alive.discard(current)
            elif current not in alive and not self.nodes.buried(current):
                alive.add(current)  # it started since this node's last look: not to be robbed
        return await self.directory.claim(meeting.id, self.nodes.least_loaded(), alive)

    async def receive(self, conn_id: str, text: str | bytes) -> None:
        if conn_id in self._local:
            await self.local.receive(conn_id, text)
            return
        remote = self._remote.get(conn_id)
        if remote is not None:
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            self._to(remote.node).put({"op": "receive", "conn": conn_id, "text": text})

    async def disconnect(self, conn_id: str) -> None:
        meeting_id = self._local.pop(conn_id, None)
        if meeting_id is not None:
            await self.local.disconnect(conn_id)
            await self._unhost(meeting_id)
            return
        remote = self._remote.pop(conn_id, None)
        if remote is not None:
            self._to(remote.node).put({"op": "disconnect", "conn": conn_id})

    async def _unhost(self, meeting_id: str) -> None:
        left = self._hosted.get(meeting_id, 1) - 1
        if left > 0:
            self._hosted[meeting_id] = left
            return
        self._hosted.pop(meeting_id, None)
        try:
            await self.directory.release(meeting_id)
        except RedisError:
            pass  # the lease lapses by itself

    def _to(self, node: str) -> _Outbound:
        outbound = self._outbound.get(node)
        if outbound is None:
            outbound = self._outbound[node] = _Outbound(self.redis, node)
        return outbound

    def _channel_back(self, message: dict[str, Any]) -> Channel:
        conn_id, node, meeting_id = message["conn"], message["from"], message["meeting"]
        self._relayed_from[conn_id] = (node, meeting_id)
        self._hosted[meeting_id] = self._hosted.get(meeting_id, 0) + 1
        return RelayChannel(self._to(node), conn_id)

    def _handle_disconnect(self, conn_id: str) -> None:
        self.relayed.handle({"op": "disconnect", "conn": conn_id})
        relayed = self._relayed_from.pop(conn_id, None)
        if relayed is not None:
            asyncio.ensure_future(self._unhost(relayed[1]))

    # --- what other nodes send ---------------------------------------------------------------

    async def _listen(self) -> None:
        """Messages for this node, for as long as it runs (re-subscribing after Redis restarts)."""
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL + self.node_id)
                    async for item in pubsub.listen():
                        if item["type"] == "message":
                            await self._handle(json.loads(item["data"]))
            except RedisError as exc:
                log.warning("cluster channel lost %s", kv(error=type(exc).__name__))
                await asyncio.sleep(RETRY)

    async def _handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op in ("connect", "receive"):
            self.relayed.handle(message)
        elif op == "disconnect":
            self._handle_disconnect(message["conn"])
        elif op in ("send", "close-conn"):
            remote = self._remote.get(message["conn"])
            if remote is None:
                return
            if op == "send":
                remote.channel.send(message["message"])
            else:
                remote.channel.close(message["code"], message["reason"])
        elif op == "recording":
            asyncio.ensure_future(self._serve_recording(message))
        elif op == "reply":
            future = self._requests.pop(message["req"], None)
            if future is not None and not future.done():
                future.set_result(message)
        elif op == "event":
            await self.bus.publish(from_dict(message["event"]))

    # --- recording and events ------------------------------------------------------------------

    async def recording(self, meeting: Meeting, start: bool) -> RecordingStatus:
        owner = await self.directory.owner(meeting.id)
        if owner is None or owner == self.node_id or owner not in self.nodes.alive:
            return await self.local.recording(meeting, start)
        self._next_request += 1
        req = self._next_request
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[req] = future
        self._to(owner).put({"op": "recording", "req": req, "meeting": meeting.id, "start": start,
                             "from": self.node_id})
        try:
            reply = await asyncio.wait_for(future, REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            self._requests.pop(req, None)
            raise RecordingRefused("unavailable", "The meeting's server did not answer; try again.") from None
        if "refused" in reply:
            raise RecordingRefused(reply["refused"]["code"], reply["refused"]["message"])
        return RecordingStatus(meeting.id, reply["active"], not meeting.e2ee, recording_id=reply["recording_id"])

    async def _serve_recording(self, message: dict[str, Any]) -> None:
        answer: dict[str, Any] = {"op": "reply", "req": message["req"]}
        meeting = await self.relayed.lookup(message["meeting"])
        try:
            if meeting is None:
                raise RecordingRefused("empty", "No such meeting.")
            status = await self.local.recording(meeting, message["start"])
            answer.update(active=status.active, recording_id=status.recording_id)
        except RecordingRefused as exc:
            answer["refused"] = {"code": exc.code, "message": str(exc)}
        self._to(message["from"]).put(answer)

    async def _recording_ready(self, event: RecordingReady) -> None:
        """Hosts see a ready recording's link on the page of the node hosting the meeting."""
        try:
            owner = await self.directory.owner(event.meeting_id)
        except RedisError:
            return
        if owner is not None and owner != self.node_id:
            self._to(owner).put({"op": "event", "event": to_dict(event)})

    # --- the face of LiveMeetings --------------------------------------------------------------

    async def watch_disk(self) -> None:
        await self.local.watch_disk()

    def session(self, meeting_id: str) -> Any:
        return self.local.session(meeting_id)

    def stats(self) -> dict[str, Any]:
        return {**self.local.stats(), "node": self.node_id, "nodes": sorted(self.nodes.alive),
                "nodes_alive": len(self.nodes.alive),
                "relayed_out": len(self._remote), "relayed_in": len(self._relayed_from)}
