"""bench/harness: child processes and the SFU control socket, without media."""

from __future__ import annotations

import sys

import pytest

from bench.harness.control import SfuProcess
from bench.harness.processes import end, spawn
from bench.synthetic import EncodedMedia, LatencyStamps, encoded_media


@pytest.fixture(scope="module")
def media() -> EncodedMedia:
    return encoded_media(160, 120, fps=30, bitrate=100_000, seconds=0.5)


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


class _RefusingSfu:
    """Stands in for the SFU process: refuses the second join, records who left."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.joined: list[str] = []
        self.left: list = []

    async def join(self, room: str, person, publish) -> None:
        if self.joined:
            raise RuntimeError("room full")
        self.joined.append(person.name)

    async def leave(self, room: str, person) -> None:
        self.left.append(person)


async def test_a_room_that_cannot_be_gathered_is_dispersed(media) -> None:
    from bench.harness.servers import MeetnowBackend

    backend = MeetnowBackend("127.0.0.1")
    backend.sfu = _RefusingSfu()  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="room full"):
        await backend.gather("r", 2, 0, media, LatencyStamps())
    # the one who joined left, and every participant made so far was closed
    assert backend.sfu.joined == ["p0"] and [p.name for p in backend.sfu.left] == ["p0", "p1"]
    assert all(p.pc.signalingState == "closed" for p in backend.sfu.left)
