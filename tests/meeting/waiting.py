"""Waiting on conditions with a deadline (never a fixed sleep)."""

from __future__ import annotations

import asyncio
from typing import Callable


async def wait_for(cond: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``cond`` until it is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
