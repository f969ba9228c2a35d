"""The ``meetnow`` command as a person runs it: real processes, one store file."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import aiohttp

from tests.conftest import wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _meetnow(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from web.cli import main; raise SystemExit(main())", *args,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def test_link_minted_by_cli_opens_after_a_restart(tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "meetnow.toml"
    config.write_text(
        f'[server]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[store]\npath = "{tmp_path / "store.sqlite3"}"\n'
    )
    new = await _meetnow("new", "--title", "Retro", "--config", str(config), cwd=tmp_path)
    out, err = await new.communicate()
    assert new.returncode == 0, err.decode()
    lines = dict(line.split(": ", 1) for line in out.decode().splitlines() if ": " in line)
    join_url, host_url = lines["Join link"], lines["Host link"]
    assert host_url.startswith(join_url + "#host=")

    server = await _meetnow("serve", "--config", str(config), cwd=tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            async def serving() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(serving, timeout=15)
            async with http.get(join_url) as response:
                assert response.status == 200
                assert "Retro" in await response.text()
    finally:
        server.terminate()
        _, err = await asyncio.wait_for(server.communicate(), 10)
    assert server.returncode == 0
    log = err.decode()
    meeting_id = join_url.rsplit("/", 1)[1]
    assert "shutting down" in log
    assert meeting_id not in log  # ids are never logged whole
    assert meeting_id[:4] + "…" in log


async def test_bad_config_is_one_line_and_non_zero(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nport = 'eighty'\n")
    process = await _meetnow("serve", "--config", str(config), cwd=tmp_path)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert err.decode().strip() == (
        "meetnow: config key 'server.port' must be an integer, not str"
    )


async def test_new_e2ee_prints_keyed_links_and_stores_no_key(tmp_path: Path) -> None:
    config = tmp_path / "meetnow.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "store.sqlite3"}"\n')
    new = await _meetnow("new", "--e2ee", "--config", str(config), cwd=tmp_path)
    out, err = await new.communicate()
    assert new.returncode == 0, err.decode()
    lines = dict(line.split(": ", 1) for line in out.decode().splitlines() if ": " in line)
    key = lines["Join link"].split("#key=", 1)[1]
    assert lines["Host link"].endswith(f"&key={key}")
    for path in tmp_path.glob("store.sqlite3*"):
        assert key.encode() not in path.read_bytes()
