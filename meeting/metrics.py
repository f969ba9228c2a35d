"""What the server's live objects say about it, as Prometheus metric families.

Nothing is counted twice: the numbers are read, at each scrape, from the objects that
already keep them (``Sessions.stats()``, ``Sfu.stats()``, the outbox, the recordings
service, the loop-lag sampler). Collection happens in two steps so a process boundary can
sit between them:

1. :func:`process_stats` reads one process's media plane into a plain dict (JSON-ready).
   A media worker process would send the same dict over its pipe.
2. :func:`metric_families` turns the server-wide dict and a *list* of per-process dicts
   into metric families, each per-process value labelled with its ``process``.

:class:`ServerMetrics` ties them to one registry per server (never the global default
registry). No label ever holds a meeting or recording id: the labels are ``process`` and
``platform``, both from a short fixed set.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from meeting.looplag import LoopLag
from meeting.media.sfu import Sfu
from meeting.outbox import Outbox
from meeting.recording.service import RecordingService
from meeting.session.host import LiveMeetings

MAIN_PROCESS = "main"

# Per-process counters: (key in the process dict, metric name without _total, help).
PROCESS_COUNTERS = (
    ("packets_received", "meetnow_rtp_packets_received", "RTP packets received from publishers."),
    ("octets_received", "meetnow_rtp_payload_received_bytes", "RTP payload bytes received from publishers."),
    ("packets_forwarded", "meetnow_rtp_packets_forwarded", "RTP packets forwarded to viewers."),
    ("octets_forwarded", "meetnow_rtp_payload_forwarded_bytes", "RTP payload bytes forwarded to viewers."),
    ("packets_retransmitted", "meetnow_rtp_retransmissions",
     "Packets sent again from the server's history in answer to viewers' NACKs."),
    ("packets_lost_upstream", "meetnow_rtp_packets_lost",
     "RTP packets lost between publishers and the server (from sequence gaps)."),
    ("nacks_sent", "meetnow_nacks_sent", "NACKs sent to publishers for packets lost on the way in."),
    ("nacks_received", "meetnow_nacks_received", "NACKs received from viewers."),
    ("keyframe_requests_sent", "meetnow_keyframe_requests", "Keyframe requests (PLI) sent to publishers."),
    ("packets_dropped_overload", "meetnow_rtp_packets_dropped_overload",
     "Datagrams dropped because the server fell behind."),
    ("cpu_seconds", "meetnow_process_cpu_seconds", "CPU time used by the process, all threads."),
)
# Per-process gauges.
PROCESS_GAUGES = (
    ("media_rooms", "meetnow_media_rooms", "Meetings with open media in the process."),
    ("peers", "meetnow_media_peers", "Peer connections (one per participant) in the process."),
    ("publications", "meetnow_publications", "Streams published (microphones, cameras, screens)."),
    ("viewer_streams", "meetnow_viewer_streams", "Streams forwarded to viewers."),
    ("loop_lag_seconds", "meetnow_event_loop_lag_seconds",
     "Worst lateness of the process's event loop over the last ten seconds."),
)
# Server-wide gauges and counters: (key, name, help).
SERVER_GAUGES = (
    ("meetings", "meetnow_meetings", "Live meetings (anyone connected)."),
    ("participants", "meetnow_participants", "People in meetings."),
    ("waiting", "meetnow_lobby_waiting", "People waiting in locked meetings' lobbies."),
    ("connections", "meetnow_signaling_connections", "Open signaling websockets."),
    ("recording", "meetnow_recordings_active", "Meetings being recorded."),
    ("composing", "meetnow_compose_running", "Recordings being composed now."),
    ("queued", "meetnow_compose_queued", "Recordings waiting to be composed."),
    ("nodes_alive", "meetnow_cluster_nodes", "Nodes of the cluster this node takes for alive, itself included."),
    ("relayed_out", "meetnow_cluster_relayed_out",
     "Signaling websockets held here for meetings hosted by another node (a cluster)."),
    ("relayed_in", "meetnow_cluster_relayed_in",
     "Signaling websockets held by another node for meetings hosted here (a cluster)."),
)
SERVER_COUNTERS = (
    ("deleted_by_retention", "meetnow_recordings_deleted_by_retention",
     "Recordings deleted because their retention ran out (since start)."),
)


def process_stats(sfu: Sfu | None, loop_lag: LoopLag | None, name: str = MAIN_PROCESS) -> dict[str, Any]:
    """One process's media plane (none in a front whose meetings live in workers) and load."""
    stats = sfu.stats() if sfu is not None else {"rooms": {}, "totals": {}}
    rooms = stats["rooms"].values()
    totals = stats["totals"]
    values: dict[str, Any] = {key: totals.get(key, 0) for key, _, _ in PROCESS_COUNTERS}
    values.update(
        process=name,
        cpu_seconds=time.process_time(),
        media_rooms=len(stats["rooms"]),
        peers=totals.get("participants", 0),
        publications=sum(r["publications"] for r in rooms),
        viewer_streams=sum(r["viewer_streams"] for r in rooms),
        loop_lag_seconds=loop_lag.worst() if loop_lag is not None else 0.0,
    )
    return values


async def server_stats(sessions: LiveMeetings, outbox: Outbox | None,
                       recordings: RecordingService | None) -> dict[str, Any]:
    """Server-wide state: meetings and people, the outbox, recordings."""
    values: dict[str, Any] = {}
    if recordings is not None:
        values.update(recordings.stats())
    # Live meetings count their own recordings, wherever they run (here or in workers).
    values.update(sessions.stats())
    if outbox is not None:
        platforms = sorted(outbox.couriers)
        backlog = await outbox.backlog()
        values["outbox"] = {p: backlog.get(p, (0, 0.0)) for p in sorted({*platforms, *backlog})}
        errors = dict(outbox.errors)
        values["chat_errors"] = {p: errors.get(p, 0) for p in sorted({*platforms, *errors})}
    return values


def metric_families(server: dict[str, Any], processes: Iterable[dict[str, Any]]) -> list[Metric]:
    """Metric families for the server-wide values and every process's values."""
    families: list[Metric] = []
    for key, name, text in SERVER_GAUGES:
        if key in server:
            families.append(GaugeMetricFamily(name, text, value=server[key]))
    for key, name, text in SERVER_COUNTERS:
        if key in server:
            families.append(CounterMetricFamily(name, text, value=server[key]))
    if "outbox" in server:
        depth = GaugeMetricFamily("meetnow_outbox_pending", "Chat messages waiting to be delivered.",
                                  labels=["platform"])
        age = GaugeMetricFamily("meetnow_outbox_oldest_age_seconds",
                                "Age of the oldest chat message waiting to be delivered (0: none).",
                                labels=["platform"])
        for platform, (count, oldest) in server["outbox"].items():
            depth.add_metric([platform], count)
            age.add_metric([platform], oldest if count else 0.0)
        families += [depth, age]
    if "chat_errors" in server:
        errors = CounterMetricFamily("meetnow_chat_delivery_errors",
                                     "Chat deliveries that failed (retried or given up), by platform.",
                                     labels=["platform"])
        for platform, count in server["chat_errors"].items():
            errors.add_metric([platform], count)
        families.append(errors)
    processes = list(processes)
    for key, name, text in PROCESS_COUNTERS:
        counter = CounterMetricFamily(name, text, labels=["process"])
        for values in processes:
            counter.add_metric([values["process"]], values.get(key, 0))
        families.append(counter)
    for key, name, text in PROCESS_GAUGES:
        gauge = GaugeMetricFamily(name, text, labels=["process"])
        for values in processes:
            gauge.add_metric([values["process"]], values.get(key, 0))
        families.append(gauge)
    return families


class _Snapshot(Collector):
    """Yields the families of the last gathered snapshot (collect() cannot await)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class ServerMetrics:
    """The server's registry: its own metrics, plus the standard process metrics
    (memory, open files) of this process.

    ``workers`` is the seam for media worker processes: each callable returns the
    :func:`process_stats` dicts of the processes it speaks for, and they are exported beside
    this process's, labelled by their ``process`` names.
    """

    def __init__(self, sessions: LiveMeetings, sfu: Sfu | None, outbox: Outbox | None = None,
                 recordings: RecordingService | None = None) -> None:
        self.sessions = sessions
        self.sfu = sfu
        self.outbox = outbox
        self.recordings = recordings
        self.loop_lag = LoopLag()
        self.workers: list[Callable[[], Awaitable[list[dict[str, Any]]]]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        ProcessCollector(registry=self.registry)  # the standard process_* names

    async def gather(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The server-wide dict and one dict per process."""
        processes = [process_stats(self.sfu, self.loop_lag)]
        for worker in self.workers:
            processes += await worker()
        return await server_stats(self.sessions, self.outbox, self.recordings), processes

    async def render(self) -> bytes:
        """Everything, in Prometheus's text format."""
        server, processes = await self.gather()
        # No await between setting the snapshot and writing it out: scrapes cannot interleave.
        self._snapshot.families = metric_families(server, processes)
        return generate_latest(self.registry)
