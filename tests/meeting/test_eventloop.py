"""Processes run their main coroutine on the event loop the configuration names."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from meeting import eventloop


async def _loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_uvloop_and_asyncio_loops_run_the_coroutine() -> None:
    assert eventloop.run(_loop_type(), "uvloop") is uvloop.Loop
    ran_on = eventloop.run(_loop_type(), "asyncio")
    assert issubclass(ran_on, asyncio.BaseEventLoop) and not issubclass(ran_on, uvloop.Loop)


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event loop"):
        eventloop.loop_factory("trio")
