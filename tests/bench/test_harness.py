"""bench/harness: child processes and the SFU control socket, without media."""

from __future__ import annotations

import sys

import pytest

from bench.harness.control import SfuProcess
from bench.harness.processes import end, spawn


def test_spawn_reads_the_port_from_the_ready_line() -> None:
    child = spawn([sys.executable, "-c", "import sys; print('READY 4321', flush=True); sys.stdin.read()"])
    try:
        assert child.port == 4321 and child.process.poll() is None
    finally:
        end(child.process)
    assert child.process.returncode == 0  # it ended because its stdin closed


def test_spawn_fails_with_the_log_when_the_child_exits_first(tmp_path) -> None:
    log = tmp_path / "child.log"
    with pytest.raises(RuntimeError, match="did not start; see .*child.log"):
        spawn([sys.executable, "-c", "import sys; sys.exit('no port for you')"], log)
    assert "no port for you" in log.read_text()


def test_spawn_gives_up_on_a_silent_child() -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        spawn([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)


async def test_control_socket_answers_and_refuses(tmp_path) -> None:
    sfu = SfuProcess(["-m", "bench.harness.control"], tmp_path / "sfu.log")
    await sfu.start()
    try:
        totals = await sfu.totals(reset_peaks=True)
        assert totals["rooms"] == 0 and totals["participants"] == 0
        await sfu.request("leave", room="nowhere", pid="nobody")  # leaving twice is not an error
        with pytest.raises(RuntimeError, match="unknown operation 'dance'"):
            await sfu.request("dance")
        with pytest.raises(RuntimeError, match="unknown source"):
            await sfu.request("join", room="r", pid="p", publish=["hologram"])
        assert len(sfu.errors) == 2
        assert (await sfu.totals())["participants"] == 0
    finally:
        await sfu.close()
    assert sfu.child is not None and sfu.child.process.returncode == 0  # it quit when asked
