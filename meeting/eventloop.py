"""Running a process's main coroutine on the configured event loop.

uvloop (libuv) does the same work as asyncio's own loop with less Python per callback and
per datagram; the forwarding path is mostly that (a datagram in, a datagram out per viewer),
so every meetnow process (the front and each media worker) runs on it unless configured not to.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new-loop function for ``name`` ("uvloop" or "asyncio", see ``server.event_loop``)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"unknown event loop {name!r}")


def run(main: Coroutine[Any, Any, T], name: str) -> T:
    """``asyncio.run(main)`` on a loop of the kind ``name`` names."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
