"""Composing recordings in the background: a process pool, bounded, resumable from the store.

A recording's row says where it is (``recording_store``): a stopped recording waits in
``composing`` until a worker has made and verified its one file, and stays there across
restarts, so whatever was not finished is picked up again at start. A recording whose
server died while it ran is composed from what reached the disk.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import timedelta
from pathlib import Path
from typing import Awaitable, Callable

from meeting import ids
from meeting.recording.compose import OUTPUT_NAME, ComposeResult, ComposeSettings, compose, init_worker
from meeting.logfmt import kv
from meeting.recording.model import COMPOSING, RECORDING, Recording, RecordingStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
RETRY_DELAY = 30.0  # seconds, times the attempt number

ReadyHandler = Callable[[Recording, ComposeResult], Awaitable[None]]


class Composer:
    """Runs compose jobs in worker processes, at most ``workers`` at once."""

    def __init__(self, store: RecordingStore, folder: Path, workers: int, on_ready: ReadyHandler,
                 settings: ComposeSettings = ComposeSettings()) -> None:
        self.store = store
        self.folder = folder
        self.workers = workers
        self.on_ready = on_ready
        self.settings = settings
        self.retry_delay = RETRY_DELAY
        self._slots = asyncio.Semaphore(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._running = False

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
        pending = await self.store.recordings_in((COMPOSING,))
        for recording in pending:
            self.submit(recording.id)
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

    async def _run(self, recording_id: str) -> None:
        key = ids.short(recording_id)
        while True:
            recording = await self.store.get_recording(recording_id)
            if recording is None or recording.state != COMPOSING:
                return
            async with self._slots:
                error = await self._compose(recording, key)
            if error is None:
                return
            attempts = recording.attempts + 1
            give_up = attempts >= MAX_ATTEMPTS
            await self.store.recording_attempt_failed(recording_id, attempts, error, failed=give_up)
            log.warning("compose failed %s", kv(recording=key, attempt=attempts, gave_up=give_up, error=error[:200]))
            if give_up:
                return
            await asyncio.sleep(self.retry_delay * attempts)

    async def _compose(self, recording: Recording, key: str) -> str | None:
        """One attempt; None on success, else what went wrong."""
        folder = self.folder / recording.id
        loop = asyncio.get_running_loop()
        try:
            result: ComposeResult = await loop.run_in_executor(
                self._executor(), compose, str(folder), recording.duration, self.settings, key)
        except BrokenProcessPool:
            self._pool = None  # a worker died (killed, out of memory): start a fresh pool
            return "the compose worker died"
        except Exception as exc:
            return repr(exc)
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
            except Exception:
                log.exception("recording ready handler failed %s", kv(recording=key))
        return None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Fresh interpreters (spawn), not forks of a process full of threads and sockets.
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker, initargs=(logging.getLogger().getEffectiveLevel(),))
        return self._pool

    async def close(self) -> None:
        """Stop: cancel jobs and end the workers. Unfinished jobs stay queued in the store."""
        self._running = False
        jobs = list(self._jobs.values())
        for task in jobs:
            task.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            # A job can take minutes; it is resumed at the next start, so end it now
            # rather than hold up shutdown (the executor has no public way to do this).
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)


def remove_tracks(folder: Path) -> None:
    """Delete everything but the composed file (once it is verified)."""
    for path in folder.iterdir():
        if path.name != OUTPUT_NAME and path.is_file():
            path.unlink(missing_ok=True)

