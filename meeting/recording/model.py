"""Recordings as the store keeps them, and the store operations the recording service needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

# A recording's life: written while the meeting runs, composed into one file, kept until
# it expires, then deleted (the row stays as a tombstone, so its page can say so).
RECORDING = "recording"
COMPOSING = "composing"
READY = "ready"
FAILED = "failed"
DELETED = "deleted"
STATES = (RECORDING, COMPOSING, READY, FAILED, DELETED)


@dataclass(frozen=True)
class Recording:
    """One recording of one meeting. Its files live in ``<recordings folder>/<id>/``."""

    id: str
    meeting_id: str
    state: str
    started_at: datetime
    expires_at: datetime
    stopped_at: datetime | None = None
    duration: float | None = None  # seconds of the composed file (the recorded span)
    file: str = ""  # the composed file's name inside the recording's folder
    size: int = 0
    timeline: list[dict[str, Any]] = field(default_factory=list)  # who spoke when
    reminded: bool = False  # the channel was told it will soon be deleted
    attempts: int = 0  # composing attempts that failed
    error: str = ""
    deleted_at: datetime | None = None


class RecordingStore(Protocol):
    async def add_recording(self, recording: Recording) -> None:
        """Keep a recording that just started."""

    async def get_recording(self, recording_id: str) -> Recording | None:
        """The recording with this id (tombstones included), or None."""

    async def recordings_in(self, states: tuple[str, ...]) -> list[Recording]:
        """Every recording in one of these states, oldest first."""

    async def meeting_recordings(self, meeting_id: str) -> list[Recording]:
        """A meeting's recordings that are not deleted, newest first."""

    async def all_recordings(self) -> list[tuple[Recording, str]]:
        """Every recording with its meeting's title, newest first."""

    async def recording_stopped(self, recording_id: str, stopped_at: datetime | None,
                                duration: float | None) -> None:
        """Recording ended (or the server died while it ran): now it waits to be composed."""

    async def recording_composed(self, recording_id: str, file: str, size: int, duration: float,
                                 timeline: list[dict[str, Any]], stopped_at: datetime) -> bool:
        """Composing succeeded; False (nothing changed) if it was no longer waiting for it."""

    async def recording_attempt_failed(self, recording_id: str, attempts: int, error: str,
                                       failed: bool) -> None:
        """Composing failed; ``failed`` gives up on it for good."""

    async def recording_retry(self, recording_id: str) -> bool:
        """Queue a failed recording for composing again, its attempts forgotten; False (nothing
        changed) if it was not failed."""

    async def recordings_expired(self, now: datetime) -> list[Recording]:
        """Recordings past their expiry that still have files or a row to clear."""

    async def recordings_to_remind(self, before: datetime) -> list[Recording]:
        """Ready recordings expiring before ``before`` whose channel was not reminded."""

    async def recording_reminded(self, recording_id: str) -> None:
        """Remember that the expiry reminder went out."""

    async def recording_deleted(self, recording_id: str, at: datetime) -> None:
        """Make the row a tombstone: no file, no timeline, state deleted."""
