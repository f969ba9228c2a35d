"""Child processes that die with the server: media workers and compose workers alike."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int | None, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux).

    The kernel sends it when the *thread* that started this process ends; servers start
    their children from the event loop's thread, which lives as long as they do. If the
    parent (``parent_pid``) is already gone, exit at once. Raises OSError where prctl fails.
    """
    libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own symbols, libc's among them
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the server died before the signal was armed
