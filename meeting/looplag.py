"""How late the event loop runs: a timer that measures its own lateness.

Every packet, message and request of the process waits its turn on one event loop; when
that loop falls behind, media is late for everyone. :class:`LoopLag` sleeps a fixed
interval and records how much later than asked it woke, keeping a short window of samples.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable

INTERVAL = 0.25  # seconds between samples
WINDOW = 40  # samples kept: the last ten seconds


class LoopLag:
    """The loop's lateness over the last ``interval * window`` seconds."""

    def __init__(self, interval: float = INTERVAL, window: int = WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._samples: deque[float] = deque(maxlen=window)

    def record(self, late: float) -> None:
        """Keep one sample (seconds late; a negative one counts as on time)."""
        self._samples.append(max(0.0, late))

    def worst(self) -> float:
        """The worst lateness in the window, in seconds (0 before the first sample)."""
        return max(self._samples, default=0.0)

    async def run(self) -> None:
        """Sample forever (run it as a task; cancel it to stop)."""
        while True:
            start = self.clock()
            await asyncio.sleep(self.interval)
            self.record(self.clock() - start - self.interval)
