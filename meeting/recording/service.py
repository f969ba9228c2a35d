"""Recording meetings: start and stop, the disk floor, and what happens after.

The service owns one :class:`~meeting.recording.capture.RoomRecorder` per meeting being recorded
(several meetings can record at once, each with its own writer thread), hands stopped
recordings to the :class:`~meeting.recording.jobs.Composer`, and runs the retention
:class:`~meeting.recording.retention.Sweeper`. A meeting's session starts and stops its
recording and shows the indicator; when a file is ready the service publishes
:class:`~meeting.events.RecordingReady` (the chat bots post the link, hosts see it).

Everything blocking (disk checks, directory and file work) runs in threads; composing runs
in worker processes.

A stop never waits long on the store: the people in the meeting are told at once, and the
row is settled (``recording`` -> ``composing``) in the background, retried with growing
pauses while the database is locked. If the server dies first, the next start settles it
as it does any recording cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

from meeting import ids
from meeting.config import Config
from meeting.events import Bus, RecordingReady, RecordingStarted, RecordingStopped
from meeting.logfmt import kv
from meeting.models import Meeting
from meeting.recording.capture import RoomRecorder
from meeting.recording.compose import ComposeResult, ComposeSettings
from meeting.recording.failures import describe
from meeting.recording.jobs import ComposeClaims, Composer, OnlyServer
from meeting.recording.model import RECORDING, Recording
from meeting.recording.retention import Sweeper
from meeting.store.base import Store

log = logging.getLogger(__name__)

# Why a recording stopped, as signaling tells the room.
STOP_HOST = "host"
STOP_EMPTY = "empty"
STOP_DISK = "disk"
STOP_SHUTDOWN = "shutdown"

SETTLE_WAIT = 1.0  # seconds a stop waits for its row to be written before answering anyway
SETTLE_RETRY = 0.5  # first pause between attempts to write a stopped row; doubled up to:
SETTLE_RETRY_MAX = 30.0
CLOSE_GRACE = 5.0  # seconds shutdown waits for stopped rows still being written

E2EE_MESSAGE = ("This meeting is end-to-end encrypted: the server cannot see its media, "
                "so it cannot record it.")


class RecordingRefused(Exception):
    """Recording cannot start; ``code`` is stable for programs, the text is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class MediaTap(Protocol):
    """The part of a meeting's :class:`~meeting.media.sfu.MediaRoom` recording needs."""

    def observe(self, observer: Any) -> None: ...

    def unobserve(self) -> None: ...


@dataclass(frozen=True)
class RecordingStatus:
    """Whether a meeting is being recorded, as its participants are told."""

    meeting_id: str
    active: bool
    available: bool  # False for end-to-end encrypted meetings
    since: datetime | None = None
    reason: str = ""  # why it stopped (STOP_*), on the change that stopped it
    recording_id: str | None = None  # for hosts only: participants are not sent it


@dataclass
class _Active:
    recording: Recording
    recorder: RoomRecorder
    media: MediaTap


def disk_free_mb(path: Path) -> float:
    """Free space on the file system holding ``path`` (blocking: call it in a thread)."""
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free / (1024 * 1024)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class RecordingService:
    """Starts and stops meeting recordings and sees them through to a link.

    Each meeting's session serializes its own starts and stops; the service only keeps
    which meetings record.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        bus: Bus,
        *,
        clock: Callable[[], datetime] = _utc_now,
        settings: ComposeSettings = ComposeSettings(),
        claims: ComposeClaims = OnlyServer(),
    ) -> None:
        self.store = store
        self.bus = bus
        self.public_url = config.server.public_url.rstrip("/")
        self.clock = clock
        self.folder = Path(config.recordings.folder)
        self.retention = timedelta(days=config.recordings.retention_days)
        self.min_free_mb = config.recordings.min_free_mb
        self.free_mb: Callable[[Path], float] = disk_free_mb
        self.composer = Composer(store, self.folder, config.recordings.compose_workers, self._ready, settings,
                                 has_space=self._has_space, claims=claims)
        # Stopped recordings are composed where the composer runs: here, or (when capture
        # happens in a media worker process) in the server the event is relayed to.
        bus.subscribe(RecordingStopped, self._stopped)
        self.sweeper = Sweeper(store, self.folder, self.url, clock, bus, busy=self.composer.busy)
        self.settle_wait = SETTLE_WAIT
        self.settle_retry = SETTLE_RETRY
        self.close_grace = CLOSE_GRACE
        self._active: dict[str, _Active] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Resume unfinished compose jobs, sweep expired recordings, start the periodic work."""
        await self.composer.start()
        self._tasks.append(asyncio.create_task(self.sweeper.run(), name="recording-sweeper"))

    async def close(self) -> None:
        """Stop every recording (their composing resumes at the next start), end the workers."""
        for meeting_id in list(self._active):
            await self.stop_recording(meeting_id, STOP_SHUTDOWN)
        if self._settling:
            _, unsettled = await asyncio.wait(set(self._settling), timeout=self.close_grace)
            for task in unsettled:  # the next start settles these rows
                task.cancel()
            if unsettled:
                log.warning("recordings left unsettled at shutdown %s", kv(count=len(unsettled)))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.composer.close()

    # --- queries -----------------------------------------------------------------------

    def url(self, recording_id: str) -> str:
        """The recording's page."""
        return f"{self.public_url}/r/{recording_id}"

    def status(self, meeting: Meeting) -> RecordingStatus:
        active = self._active.get(meeting.id)
        return RecordingStatus(meeting.id, active is not None, not meeting.e2ee,
                               since=active.recording.started_at if active else None,
                               recording_id=active.recording.id if active else None)

    async def _has_space(self) -> bool:
        """Whether the recordings folder is back above its free-space floor (quietly)."""
        free = await asyncio.to_thread(self.free_mb, self.folder)
        return free >= self.min_free_mb

    async def disk_low(self) -> bool:
        """Whether the recordings folder is below its free-space floor (logged when it is)."""
        try:
            free = await asyncio.to_thread(self.free_mb, self.folder)
        except OSError:
            log.exception("disk check failed")
            return False
        if free < self.min_free_mb:
            log.warning("recordings folder low on space %s", kv(free_mb=int(free), floor_mb=self.min_free_mb))
            return True
        return False

    def stats(self) -> dict[str, int]:
        """Meetings recording now, the compose queue, and recordings deleted by retention."""
        return {"recording": len(self._active), **self.composer.stats(),
                "deleted_by_retention": self.sweeper.deleted_total}

    def recorder(self, meeting_id: str) -> RoomRecorder | None:
        """The live recorder of a meeting (tests and benchmarks look at its progress)."""
        active = self._active.get(meeting_id)
        return active.recorder if active else None

    async def links(self, meeting_id: str) -> list[dict[str, str]]:
        """A meeting's ready recordings, as hosts see them on the meeting page."""
        return [self.link(r) for r in await self.store.meeting_recordings(meeting_id) if r.state == "ready"]

    def link(self, recording: Recording) -> dict[str, str]:
        return {"id": recording.id, "url": self.url(recording.id),
                "started_at": recording.started_at.isoformat(timespec="seconds"),
                "delete_on": recording.expires_at.date().isoformat()}

    # --- start and stop ----------------------------------------------------------------

    async def start_recording(self, meeting: Meeting, media: MediaTap,
                              names: Callable[[str], str]) -> RecordingStatus:
        """Start recording a meeting's ``media`` (starting a running recording changes nothing).

        ``names`` gives a participant's display name, to label their tracks. Raises
        RecordingRefused for an end-to-end encrypted meeting, or when the disk is below its floor.
        """
        if meeting.e2ee:
            raise RecordingRefused("e2ee", E2EE_MESSAGE)
        if meeting.id in self._active:
            return self.status(meeting)
        free = await asyncio.to_thread(self.free_mb, self.folder)
        if free < self.min_free_mb:
            log.warning("recording refused %s", kv(meeting=ids.short(meeting.id), reason="disk",
                                                   free_mb=int(free), floor_mb=self.min_free_mb))
            raise RecordingRefused("disk", "The server is low on disk space, so it cannot record now.")
        now = self.clock()
        recording = Recording(id=ids.new_id(), meeting_id=meeting.id, state=RECORDING, started_at=now,
                              expires_at=now + self.retention)
        folder = self.folder / recording.id
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        await self.store.add_recording(recording)
        recorder = RoomRecorder(folder, names, ids.short(recording.id))
        recorder.start()
        self._active[meeting.id] = _Active(recording, recorder, media)
        media.observe(recorder)
        log.info("recording started %s", kv(meeting=ids.short(meeting.id), recording=ids.short(recording.id)))
        await self.bus.publish(RecordingStarted(meeting.id, recording.id))
        return self.status(meeting)

    async def stop_recording(self, meeting_id: str, reason: str = STOP_HOST) -> RecordingStatus:
        """Stop recording and queue composing (stopping when not recording changes nothing).

        Returns the stopped status even when the store cannot be written now: the row is
        settled in the background (see the module's docstring).
        """
        active = self._active.pop(meeting_id, None)
        if active is None:
            return RecordingStatus(meeting_id, False, True)
        active.media.unobserve()
        summary = await asyncio.to_thread(active.recorder.close)
        recording = active.recording
        log.info("recording stopped %s", kv(
            meeting=ids.short(meeting_id), recording=ids.short(recording.id), reason=reason,
            span_s=round(summary.span, 1), files=summary.tracks, bytes=summary.bytes, dropped=summary.dropped))
        settle = asyncio.create_task(
            self._settle(recording, self.clock(), round(summary.span, 3), compose=reason != STOP_SHUTDOWN),
            name=f"recording-settle-{ids.short(recording.id)}")
        self._settling.add(settle)
        settle.add_done_callback(self._settling.discard)
        # Usually written at once, so callers see the row settled; never held up for long.
        await asyncio.wait({settle}, timeout=self.settle_wait)
        return RecordingStatus(meeting_id, False, True, reason=reason, recording_id=recording.id)

    async def _settle(self, recording: Recording, stopped_at: datetime, span: float, compose: bool) -> None:
        """Write the stopped row, retrying until the store takes it; then tell the composer."""
        recording_id = recording.id
        delay, failures = self.settle_retry, 0
        while True:
            try:
                await self.store.recording_stopped(recording_id, stopped_at, span)
                break
            except Exception as exc:  # locked, most likely: try again a little later
                failures += 1
                log.warning("recording row not written %s", kv(recording=ids.short(recording_id), attempt=failures,
                                                                retry_s=delay, error=describe(exc, 200)))
                await asyncio.sleep(delay)
                delay = min(delay * 2, SETTLE_RETRY_MAX)
        if failures:
            log.info("recording row written %s", kv(recording=ids.short(recording_id), attempts=failures + 1))
        await self.bus.publish(RecordingStopped(recording.meeting_id, recording_id, compose))

    async def _stopped(self, event: RecordingStopped) -> None:
        if event.compose:
            self.composer.submit(event.recording_id)

    # --- background ------------------------------------------------------------------------

    async def _ready(self, recording: Recording, result: ComposeResult) -> None:
        link = self.link(recording)
        await self.bus.publish(RecordingReady(recording.meeting_id, recording.id, link["url"],
                                              link["started_at"], link["delete_on"]))
