"""How busy this process is: its share of a core since the last look."""

from __future__ import annotations

import time


class LoadMeter:
    """Samples the process's CPU time against wall time."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def sample(self) -> float:
        """CPU used since the previous call, as a fraction of one core."""
        cpu, wall = time.process_time(), time.monotonic()
        share = (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        self._cpu, self._wall = cpu, wall
        return share
