"""What runs inside a compose worker process: its set-up, and one job that owns its folder.

- :func:`init_worker` is the process pool's initializer. It lowers the worker's priority
  below the media server's, and asks the kernel to kill the worker when the server dies
  (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the server never leaves a worker composing on
  its own beside the next server's.
- :func:`compose_job` composes a folder only while holding its lock (``flock`` on a file in
  the folder; the kernel releases it when the holder dies), and turns any failure into a
  :class:`ComposeFailure`: plain, picklable, said without the recording's full id, and
  telling a full disk from a broken recording.
"""

from __future__ import annotations

import fcntl
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from meeting.lifetime import die_with_parent
from meeting.logfmt import kv
from meeting.recording.compose import ComposeResult, ComposeSettings, compose
from meeting.recording.failures import describe, is_disk_full

log = logging.getLogger(__name__)

LOCK_NAME = ".compose.lock"

# ComposeFailure kinds.
BUSY = "busy"  # another process is composing this folder
DISK_FULL = "disk-full"  # no room on the disk: retry once there is
ERROR = "error"  # anything else: counts towards the attempt limit


class ComposeFailure(Exception):
    """A compose job that did not finish: ``kind`` (BUSY, DISK_FULL, ERROR) and what happened."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


class FolderBusy(Exception):
    """Another process holds the folder's compose lock."""


def init_worker(level: int = logging.INFO, parent_pid: int | None = None) -> None:
    """Process-pool initializer: die with the server, yield to it, and log like it.

    ``parent_pid`` is the server's pid; if the worker was already orphaned before the
    death signal was armed, it exits at once.
    """
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        # SIGKILL: a composition has nothing to save (it writes to a temporary name), and the
        # folder lock goes with the process.
        die_with_parent(parent_pid)
    except (OSError, AttributeError) as exc:  # not Linux: the folder lock still keeps jobs apart
        log.warning("compose worker cannot follow the server's death %s", kv(error=describe(exc)))
    try:
        os.nice(10)  # composing may wait; forwarding live media may not
    except OSError:
        pass


@contextmanager
def own_folder(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s compose lock for the duration; raise FolderBusy if someone else does."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy() from None
        yield
    finally:
        os.close(fd)  # releases the lock


def compose_job(folder: str, span: float | None, settings: ComposeSettings, key: str) -> ComposeResult:
    """Compose ``folder`` while owning it; raise ComposeFailure (never anything else) if not done."""
    try:
        with own_folder(Path(folder)):
            return compose(folder, span, settings, key)
    except FolderBusy:
        raise ComposeFailure(BUSY, "another process is composing this recording") from None
    except Exception as exc:
        kind = DISK_FULL if is_disk_full(exc) else ERROR
        raise ComposeFailure(kind, describe(exc)) from None
