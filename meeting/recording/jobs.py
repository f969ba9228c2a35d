"""Composing recordings in the background: a process pool, bounded, resumable from the store.

A recording's row says where it is (``recording_store``): a stopped recording waits in
``composing`` until a worker has made and verified its one file, and stays there across
restarts, so whatever was not finished is picked up again at start (and by a periodic
rescan, which also finds recordings queued again by ``meetnow recordings --retry``). A
recording whose server died while it ran is composed from what reached the disk.

Failures are told apart (``meeting.recording.worker``):

- the disk is full: not the recording's fault, so it does not count as an attempt; the job
  waits, with growing pauses, until the recordings folder is above its free-space floor
  again, then tries again;
- another process holds the folder (a worker of a server that was killed, still
  finishing): wait and try again, not counted either;
- anything else counts; after ``MAX_ATTEMPTS`` the recording is ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import timedelta
from pathlib import Path
from contextlib import asynccontextmanager
from typing import AsyncContextManager, AsyncIterator, Awaitable, Callable, Protocol

from meeting import ids, internals
from meeting.logfmt import kv
from meeting.recording.compose import OUTPUT_NAME, ComposeResult, ComposeSettings
from meeting.recording.failures import describe, mentions_disk_full, traceback_text
from meeting.recording.model import COMPOSING, FAILED, RECORDING, Recording, RecordingStore
from meeting.recording.worker import BUSY, DISK_FULL, ERROR, ComposeFailure, compose_job, init_worker

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
RETRY_DELAY = 30.0  # seconds, times the attempt number
BUSY_DELAY = 30.0  # seconds between looks at a folder another process is composing
SPACE_DELAY = 10.0  # first pause after the disk filled up; doubled each time, up to:
SPACE_DELAY_MAX = 600.0
RESCAN_INTERVAL = 60.0  # seconds between looks for recordings queued from outside

ReadyHandler = Callable[[Recording, ComposeResult], Awaitable[None]]
SpaceCheck = Callable[[], Awaitable[bool]]


class ComposeClaims(Protocol):
    """Who composes a recording when several servers share the store and folder."""

    def hold(self, recording_id: str) -> AsyncContextManager[bool]:
        """True inside while this server holds the recording (False: another one does)."""


class OnlyServer:
    """One server alone: every recording is its own to compose."""

    @asynccontextmanager
    async def hold(self, recording_id: str) -> AsyncIterator[bool]:
        yield True


async def _always(*_: object) -> bool:
    return True


class Composer:
    """Runs compose jobs in worker processes, at most ``workers`` at once.

    ``has_space`` says whether the recordings folder has room again after a composition
    ran out of it.
    """

    def __init__(self, store: RecordingStore, folder: Path, workers: int, on_ready: ReadyHandler,
                 settings: ComposeSettings = ComposeSettings(), has_space: SpaceCheck = _always,
                 claims: ComposeClaims = OnlyServer()) -> None:
        self.store = store
        self.folder = folder
        self.workers = workers
        self.on_ready = on_ready
        self.settings = settings
        self.has_space = has_space
        self.claims = claims
        self.retry_delay = RETRY_DELAY
        self.busy_delay = BUSY_DELAY
        self.space_delay = SPACE_DELAY
        self.space_delay_max = SPACE_DELAY_MAX
        self.rescan_interval = RESCAN_INTERVAL
        self._slots = asyncio.Semaphore(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._rescanner: asyncio.Task[None] | None = None
        self._running = False
        self._composing = 0  # jobs holding a worker now

    def stats(self) -> dict[str, int]:
        """Jobs composing now, and jobs queued behind them (waiting for a worker or a retry)."""
        return {"composing": self._composing, "queued": len(self._jobs) - self._composing}

    def busy(self, recording_id: str) -> bool:
        """Whether a job for this recording is queued or running."""
        return recording_id in self._jobs

    async def start(self) -> int:
        """Start taking jobs; queue every recording left unfinished. Returns how many."""
        self._running = True
        for recording in await self.store.recordings_in((RECORDING,)):
            # The server stopped while this was recording: compose what reached the disk.
            log.info("recording interrupted %s", kv(recording=ids.short(recording.id)))
            await self.store.recording_stopped(recording.id, None, None)
        for recording in await self.store.recordings_in((FAILED,)):
            # Given up on by an older version because the disk was full: space may be back.
            if mentions_disk_full(recording.error) and await self.store.recording_retry(recording.id):
                log.info("compose retried after a full disk %s", kv(recording=ids.short(recording.id)))
        pending = await self.store.recordings_in((COMPOSING,))
        for recording in pending:
            self.submit(recording.id)
        self._rescanner = asyncio.create_task(self._rescan(), name="compose-rescan")
        return len(pending)

    def submit(self, recording_id: str) -> None:
        """Compose this recording (idempotent). Before :meth:`start` it waits in the store."""
        if not self._running or recording_id in self._jobs:
            return
        task = asyncio.create_task(self._run(recording_id), name=f"compose-{ids.short(recording_id)}")
        self._jobs[recording_id] = task
        task.add_done_callback(lambda _: self._jobs.pop(recording_id, None))
        log.info("compose queued %s", kv(recording=ids.short(recording_id), queued=len(self._jobs)))

    async def wait(self, recording_id: str) -> None:
        """Until this recording's job (if any) is over; for tests and shutdown."""
        task = self._jobs.get(recording_id)
        if task is not None:
            await asyncio.shield(task)

    async def _rescan(self) -> None:
        while True:
            await asyncio.sleep(self.rescan_interval)
            try:
                for recording in await self.store.recordings_in((COMPOSING,)):
                    self.submit(recording.id)
            except Exception as exc:  # the store is busy or gone: look again next time
                log.warning("compose rescan failed %s", kv(error=describe(exc)))

    async def _run(self, recording_id: str) -> None:
        key = ids.short(recording_id)
        space_delay = self.space_delay
        while True:
            recording = await self.store.get_recording(recording_id)
            if recording is None or recording.state != COMPOSING:
                return
            async with self._slots, self.claims.hold(recording_id) as ours:
                if not ours:
                    return  # another server composes it (the rescan looks again if it stops)
                self._composing += 1
                try:
                    failure = await self._compose(recording, key)
                finally:
                    self._composing -= 1
            if failure is None:
                return
            if failure.kind == BUSY:
                log.info("compose waits %s", kv(recording=key, reason="folder in use", retry_s=self.busy_delay))
                await asyncio.sleep(self.busy_delay)
            elif failure.kind == DISK_FULL:
                # Shown on the row, not counted: the recording itself is fine.
                await self.store.recording_attempt_failed(recording_id, recording.attempts,
                                                          f"disk full: {failure.message}", failed=False)
                log.warning("compose out of disk space %s", kv(recording=key, error=failure.message[:200]))
                space_delay = await self._until_space(key, space_delay)
            else:
                attempts = recording.attempts + 1
                give_up = attempts >= MAX_ATTEMPTS
                await self.store.recording_attempt_failed(recording_id, attempts, failure.message, failed=give_up)
                log.warning("compose failed %s", kv(recording=key, attempt=attempts, gave_up=give_up,
                                                    error=failure.message[:200]))
                if give_up:
                    return
                await asyncio.sleep(self.retry_delay * attempts)

    async def _until_space(self, key: str, delay: float) -> float:
        """Pause, longer each time, until the folder has room; returns the next pause."""
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.space_delay_max)
            try:
                if await self.has_space():
                    log.info("compose resumes, disk space is back %s", kv(recording=key))
                    return delay
            except Exception as exc:  # cannot tell: try composing, which will tell
                log.warning("disk check failed %s", kv(error=describe(exc)))
                return delay

    async def _compose(self, recording: Recording, key: str) -> ComposeFailure | None:
        """One attempt; None on success, else what went wrong."""
        folder = self.folder / recording.id
        loop = asyncio.get_running_loop()
        try:
            result: ComposeResult = await loop.run_in_executor(
                self._executor(), compose_job, str(folder), recording.duration, self.settings, key)
        except ComposeFailure as failure:
            return failure
        except BrokenProcessPool:
            self._pool = None  # a worker died (killed, out of memory): start a fresh pool
            return ComposeFailure(ERROR, "the compose worker died")
        except Exception as exc:
            return ComposeFailure(ERROR, describe(exc))
        stopped_at = recording.stopped_at or recording.started_at + timedelta(seconds=result.duration)
        if not await self.store.recording_composed(recording.id, OUTPUT_NAME, result.size, result.duration,
                                                   result.timeline, stopped_at):
            return None  # deleted meanwhile: nothing more to do
        await asyncio.to_thread(remove_tracks, folder)
        log.info("recording ready %s", kv(recording=key, duration_s=round(result.duration, 1),
                                           size=result.size, compose_s=result.seconds,
                                           speed=f"{result.speed:.1f}x"))
        ready = await self.store.get_recording(recording.id)
        if ready is not None:
            try:
                await self.on_ready(ready, result)
            except Exception as exc:
                log.error("recording ready handler failed %s\n%s", kv(recording=key), traceback_text(exc))
        return None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Fresh interpreters (spawn), not forks of a process full of threads and sockets.
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker, initargs=(logging.getLogger().getEffectiveLevel(), os.getpid()))
        return self._pool

    async def close(self) -> None:
        """Stop: cancel jobs and end the workers. Unfinished jobs stay queued in the store."""
        self._running = False
        tasks = list(self._jobs.values())
        if self._rescanner is not None:
            tasks.append(self._rescanner)
            self._rescanner = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            # A job can take minutes; it is resumed at the next start, so end it now
            # rather than hold up shutdown (the executor has no public way to do this).
            for process in internals.pool_processes(pool):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)


def remove_tracks(folder: Path) -> None:
    """Delete everything but the composed file (once it is verified)."""
    for path in folder.iterdir():
        if path.name != OUTPUT_NAME and path.is_file():
            path.unlink(missing_ok=True)
