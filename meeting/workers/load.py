"""How busy this process is: CPU share since the last look, and event-loop lag."""

from __future__ import annotations

import asyncio
import time


class LoadMeter:
    """Samples the process's CPU time and how late the event loop wakes a timer."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()
        self.lag_ms = 0.0  # worst lateness since the last :meth:`sample`

    def sample(self) -> tuple[float, float]:
        """(CPU as a fraction of one core, worst loop lag in ms) since the previous call."""
        cpu, wall = time.process_time(), time.monotonic()
        share = (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        self._cpu, self._wall = cpu, wall
        lag, self.lag_ms = self.lag_ms, 0.0
        return share, lag

    async def watch_lag(self, interval: float = 0.1) -> None:
        """Run forever, noting how late each ``interval`` sleep wakes."""
        while True:
            due = time.monotonic() + interval
            await asyncio.sleep(interval)
            self.lag_ms = max(self.lag_ms, (time.monotonic() - due) * 1000)
