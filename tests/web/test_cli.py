"""The ``meetnow`` command as a person runs it: real processes, one store file."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import aiohttp

from tests.conftest import wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _meetnow(*args: str, cwd: Path, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from web.cli import main; raise SystemExit(main())", *args,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
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

            await wait_for(serving, timeout=60)  # a front and its workers starting on a busy machine
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


async def test_serve_with_metrics_on_their_own_listener_and_json_logs(tmp_path: Path) -> None:
    port, metrics_port = _free_port(), _free_port()
    config = tmp_path / "meetnow.toml"
    config.write_text(
        f'[server]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[store]\npath = "{tmp_path / "store.sqlite3"}"\n'
        f'[metrics]\nenabled = true\nlisten = "127.0.0.1:{metrics_port}"\n'
        '[turn]\nurls = ["turn:127.0.0.1:3478?transport=udp"]\n'
        '[log]\nformat = "json"\n'
    )
    secrets = {"MEETNOW_METRICS_TOKEN": "scrape-token-1234", "MEETNOW_TURN_SECRET": "turn-secret-5678"}
    server = await _meetnow("serve", "--config", str(config), cwd=tmp_path, env=secrets)
    try:
        async with aiohttp.ClientSession() as http:
            async def scraped() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{metrics_port}/metrics",
                                        headers={"Authorization": "Bearer scrape-token-1234"}) as r:
                        return r.status == 200 and "meetnow_meetings 0.0" in await r.text()
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(scraped, timeout=60)  # a front and two workers starting on a busy machine
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as refused:
                assert refused.status == 401
            async with http.get(f"http://127.0.0.1:{port}/metrics",
                                headers={"Authorization": "Bearer scrape-token-1234"}) as main:
                assert main.status == 404  # only on the listener of their own
    finally:
        server.terminate()
        _, err = await asyncio.wait_for(server.communicate(), 10)
    assert server.returncode == 0
    entries = [json.loads(line) for line in err.decode().splitlines()]
    messages = [e["message"] for e in entries]
    assert any(m.startswith("metrics listen=") for m in messages) and "shutting down" in messages
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    for secret in secrets.values():
        assert secret not in err.decode()


async def test_metrics_on_the_main_listener_need_a_token(tmp_path: Path) -> None:
    config = tmp_path / "meetnow.toml"
    config.write_text("[metrics]\nenabled = true\n")
    process = await _meetnow("serve", "--config", str(config), cwd=tmp_path)
    _, err = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 2
    assert "metrics.token" in err.decode()
