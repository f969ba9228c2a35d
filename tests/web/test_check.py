"""``meetnow check``: each broken setting is flagged with what to change, a sound one is not,
and the command exits non-zero when anything is wrong (without hanging on a dead TURN)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
import time
from pathlib import Path
from typing import AsyncIterator

import pytest

from meeting.config import Config, MediaConfig, RecordingsConfig, ServerConfig, StoreConfig, TurnConfig
from tests.coturn import Coturn, coturn, free_port
from web.check import Finding, run_checks

PUBLIC = ["1.2.3.4", "10.0.0.4", "127.0.0.1"]  # a global address (only classified, never contacted)
PRIVATE = ["10.0.0.4", "fe80::1%eth0", "127.0.0.1", "::1"]


def sound(tmp_path: Path, **turn: object) -> Config:
    """A deployment that passes: HTTPS, a public announced address, writable folders."""
    return Config(
        server=ServerConfig(public_url="https://meet.example.org"),
        store=StoreConfig(path=str(tmp_path / "data" / "meetnow.sqlite3")),
        recordings=RecordingsConfig(folder=str(tmp_path / "data" / "recordings"), min_free_mb=1),
        media=MediaConfig(announce_addresses=("5.6.7.8",)),
        turn=TurnConfig(**turn) if turn else TurnConfig(),  # type: ignore[arg-type]
    )


async def problems(config: Config, addresses: list[str] = PUBLIC, timeout: float = 3.0) -> dict[str, Finding]:
    findings = await run_checks(config, addresses=lambda: addresses, timeout=timeout)
    return {f.key: f for f in findings if not f.ok}


@pytest.fixture
async def turn(tmp_path: Path) -> AsyncIterator[Coturn]:
    async with coturn(tmp_path / "coturn") as server:
        yield server


async def test_a_sound_deployment_passes(tmp_path: Path, turn: Coturn) -> None:
    config = sound(tmp_path, urls=(turn.url("udp"), turn.url("tcp")), secret=turn.secret)
    findings = await run_checks(config, addresses=lambda: PUBLIC)
    assert all(f.ok for f in findings), [f.line() for f in findings if not f.ok]
    keys = [f.key for f in findings]
    assert keys.count("turn.urls") == 2 and "recordings.folder" in keys and "recordings.min_free_mb" in keys
    assert not (tmp_path / "data").exists()  # checking made nothing


async def test_a_public_url_that_is_not_https(tmp_path: Path) -> None:
    for url in ("http://meet.example.org", "https://localhost:8443"):
        config = dataclasses.replace(sound(tmp_path), server=ServerConfig(public_url=url))
        found = await problems(config)
        assert list(found) == ["server.public_url"], found
        assert url in found["server.public_url"].text
    assert "HTTPS" in (await problems(dataclasses.replace(
        sound(tmp_path), server=ServerConfig(public_url="http://meet.example.org"))))["server.public_url"].text


async def test_no_announced_address_on_a_private_only_machine(tmp_path: Path) -> None:
    config = dataclasses.replace(sound(tmp_path), media=MediaConfig())
    found = await problems(config, addresses=PRIVATE)
    assert list(found) == ["media.announce_addresses"]
    assert "10.0.0.4" in found["media.announce_addresses"].text
    assert "announce_addresses" in found["media.announce_addresses"].text and "[turn]" in found[
        "media.announce_addresses"].text
    # A public interface address, or a private announced one with TURN, is fine.
    assert not await problems(config, addresses=PUBLIC)
    private_announced = dataclasses.replace(config, media=MediaConfig(announce_addresses=("192.168.1.5",)))
    assert list(await problems(private_announced, addresses=PRIVATE)) == ["media.announce_addresses"]


async def test_a_turn_server_that_does_not_answer_is_flagged_within_the_timeout(tmp_path: Path) -> None:
    # A UDP port nobody reads and a TCP port nobody listens on.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        udp = silent.getsockname()[1]
        tcp = free_port()
        config = sound(tmp_path, urls=(f"turn:127.0.0.1:{udp}?transport=udp",
                                       f"turn:127.0.0.1:{tcp}?transport=tcp"), secret="s")
        started = time.monotonic()
        findings = await run_checks(config, addresses=lambda: PUBLIC, timeout=1.0)
        assert time.monotonic() - started < 20  # bounded by the probe timeout, not hung
    finally:
        silent.close()
    turn_findings = [f for f in findings if f.key == "turn.urls"]
    assert [f.ok for f in turn_findings] == [False, False]
    assert "did not answer" in turn_findings[0].text and "UDP port" in turn_findings[0].text
    assert "cannot be reached" in turn_findings[1].text


async def test_a_turn_secret_that_differs_from_coturns(tmp_path: Path, turn: Coturn) -> None:
    config = sound(tmp_path, urls=(turn.url("udp"),), secret="not-" + turn.secret)
    found = await problems(config)
    assert list(found) == ["turn.urls"]
    assert "static-auth-secret" in found["turn.urls"].text and "401" in found["turn.urls"].text


async def test_an_unwritable_recordings_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    config = dataclasses.replace(sound(tmp_path), recordings=RecordingsConfig(folder=str(blocker / "recordings"),
                                                                            min_free_mb=1))
    found = await problems(config)
    assert list(found) == ["recordings.folder"]
    assert str(blocker / "recordings") in found["recordings.folder"].text


async def test_too_little_disk(tmp_path: Path) -> None:
    config = dataclasses.replace(sound(tmp_path), recordings=RecordingsConfig(
        folder=str(tmp_path / "recordings"), min_free_mb=1 << 40))  # an exabyte
    found = await problems(config)
    assert list(found) == ["recordings.min_free_mb"]
    assert "below the floor" in found["recordings.min_free_mb"].text


async def _meetnow_check(config: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from web.cli import main; raise SystemExit(main())", "check", "--config",
        str(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_command_exits_non_zero_and_says_what_to_change(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[server]\npublic_url = "http://meet.example.org"\n'
                    f'[store]\npath = "{tmp_path / "db.sqlite3"}"\n'
                    f'[recordings]\nfolder = "{tmp_path / "recordings"}"\nmin_free_mb = 1\n'
                    '[media]\nannounce_addresses = ["5.6.7.8"]\n')
    code, out = await _meetnow_check(path)
    assert code == 1
    assert "PROBLEM server.public_url: http://meet.example.org is not HTTPS" in out
    assert "1 problem found." in out
    path.write_text(path.read_text().replace("http://meet", "https://meet"))
    code, out = await _meetnow_check(path)
    assert code == 0 and "No problems found." in out


async def test_probes_run_side_by_side(tmp_path: Path) -> None:
    # Three dead servers cost one timeout, not three.
    silent = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for s in silent:
        s.bind(("127.0.0.1", 0))
    try:
        config = sound(tmp_path, urls=tuple(f"turn:127.0.0.1:{s.getsockname()[1]}" for s in silent), secret="s")
        started = asyncio.get_running_loop().time()
        found = await run_checks(config, addresses=lambda: PUBLIC, timeout=1.0)
        assert asyncio.get_running_loop().time() - started < 2.9
    finally:
        for s in silent:
            s.close()
    assert [f.ok for f in found if f.key == "turn.urls"] == [False, False, False]
