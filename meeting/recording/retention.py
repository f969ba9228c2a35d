"""Keeping recordings only as long as promised: a sweeper that deletes and reminds.

Each recording expires ``retention_days`` after it started. The sweeper runs at start and
then periodically: it deletes expired recordings (the folder with every file, and the
row's content; the row stays as a tombstone so the link answers 410 Gone), and, three
days before expiry, reminds the meeting's chat channel once.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from meeting import ids
from meeting.events import Bus, RecordingExpiring
from meeting.logfmt import kv
from meeting.recording.failures import traceback_text
from meeting.recording.model import RecordingStore

log = logging.getLogger(__name__)

REMIND_BEFORE = timedelta(days=3)
SWEEP_INTERVAL = 3600.0  # seconds


@dataclass(frozen=True)
class SweepReport:
    deleted: int
    reminded: int


class Sweeper:
    """Deletes expired recordings and sends the one reminder before it."""

    def __init__(self, store: RecordingStore, folder: Path, url_for: Callable[[str], str],
                 clock: Callable[[], datetime], bus: Bus,
                 busy: Callable[[str], bool] = lambda recording_id: False) -> None:
        self.store = store
        self.folder = folder
        self.url_for = url_for
        self.clock = clock
        self.bus = bus
        self.busy = busy  # a recording being composed is left for the next sweep
        self.interval = SWEEP_INTERVAL
        self.deleted_total = 0  # since start, for the metrics

    async def sweep(self) -> SweepReport:
        """One pass: delete what expired, remind what expires within three days."""
        now = self.clock()
        deleted = reminded = 0
        for recording in await self.store.recordings_expired(now):
            if self.busy(recording.id):
                continue
            await asyncio.to_thread(shutil.rmtree, self.folder / recording.id, True)
            await self.store.recording_deleted(recording.id, now)
            deleted += 1
            self.deleted_total += 1
            log.info("recording deleted %s", kv(recording=ids.short(recording.id),
                                                 age_days=(now - recording.started_at).days))
        for recording in await self.store.recordings_to_remind(now + REMIND_BEFORE):
            if recording.expires_at <= now:
                continue
            try:
                await self.bus.publish(RecordingExpiring(
                    recording.meeting_id, recording.id, self.url_for(recording.id),
                    recording.expires_at.date().isoformat()), strict=True)
            except Exception as exc:
                # Not marked as reminded: the next sweep tries again. (The error may quote
                # the recording's link: logged with ids shortened.)
                log.error("expiry reminder failed %s\n%s", kv(recording=ids.short(recording.id)),
                          traceback_text(exc))
                continue
            await self.store.recording_reminded(recording.id)
            reminded += 1
        return SweepReport(deleted, reminded)

    async def run(self) -> None:
        """Sweep now and every ``interval`` seconds, forever."""
        while True:
            try:
                report = await self.sweep()
                if report.deleted or report.reminded:
                    log.info("recordings swept %s", kv(deleted=report.deleted, reminded=report.reminded))
            except Exception as exc:
                log.error("recording sweep failed\n%s", traceback_text(exc))
            await asyncio.sleep(self.interval)
