"""The ``meetnow`` command on PostgreSQL: real processes, the database URL (and its password)
from MEETNOW_STORE_URL, media workers opening the same database."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from tests.conftest import wait_for
from tests.stores import PostgresServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _meetnow(*args: str, cwd: Path, store_url: str, **kwargs: object) -> asyncio.subprocess.Process:
    env = {**os.environ, "MEETNOW_STORE_URL": store_url}
    pipes = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE, **kwargs}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from web.cli import main; raise SystemExit(main())", *args,
        cwd=cwd, env=env, **pipes,  # type: ignore[arg-type]
    )


@pytest.fixture
async def database(postgres: PostgresServer) -> AsyncIterator[str]:
    name = await postgres.create_database()
    yield name
    await postgres.drop_database(name)


async def test_new_serve_and_join_on_postgresql_with_workers(
        tmp_path: Path, postgres: PostgresServer, database: str) -> None:
    port = _free_port()
    config = tmp_path / "meetnow.toml"
    # No store key in the file: the URL, password and all, comes from the environment.
    config.write_text(
        f'[server]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\nworkers = 2\n'
        f'[recordings]\nfolder = "{tmp_path / "recordings"}"\n'
        '[media]\nannounce_addresses = ["127.0.0.1"]\nallowed_peer_networks = ["127.0.0.0/8"]\n')
    url = postgres.url(database)
    new = await _meetnow("new", "--title", "Standup", "--config", str(config), cwd=tmp_path, store_url=url)
    out, err = await new.communicate()
    assert new.returncode == 0, err.decode()
    lines = dict(line.split(": ", 1) for line in out.decode().splitlines() if ": " in line)
    join_url, host_url = lines["Join link"], lines["Host link"]
    meeting_id = join_url.rsplit("/", 1)[1]
    assert not (tmp_path / "data").exists()  # nothing went to the SQLite default

    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        server = await _meetnow("serve", "--config", str(config), cwd=tmp_path, store_url=url,
                                stdout=asyncio.subprocess.DEVNULL, stderr=log_file)
    try:
        async with aiohttp.ClientSession() as http:
            async def serving() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(serving, timeout=30)
            async with http.get(join_url) as response:
                assert response.status == 200 and "Standup" in await response.text()
            # The meeting lives on a worker process, which finds it, and the host key, in PostgreSQL.
            async with http.ws_connect(f"http://127.0.0.1:{port}/m/{meeting_id}/ws") as ws:
                await ws.send_json({"type": "join", "name": "Ann", "publish": [],
                                    "host_key": host_url.split("#host=", 1)[1]})
                welcome = await asyncio.wait_for(ws.receive_json(), 30)
                assert welcome["type"] == "welcome" and welcome["you"]["host"] is True, welcome
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    log = log_path.read_text()
    assert server.returncode == 0, log[-3000:]
    assert "media worker ready" in log
    assert postgres.password not in log and postgres.password not in out.decode()

    listing = await _meetnow("recordings", "--config", str(config), cwd=tmp_path, store_url=url)
    out, err = await listing.communicate()
    assert listing.returncode == 0, err.decode()
    assert out.decode().strip() == "No recordings."


@pytest.mark.parametrize("problem", ["wrong password", "nobody listening"])
async def test_an_unusable_database_is_one_line_without_the_password(
        tmp_path: Path, postgres: PostgresServer, database: str, problem: str) -> None:
    secret = "s3cret-not-for-logs"
    url = postgres.url(database, password=secret)
    if problem == "nobody listening":
        url = url.replace(f":{postgres.port}/", f":{_free_port()}/")
    for command in ("new", "recordings", "serve"):
        process = await _meetnow(command, cwd=tmp_path, store_url=url)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 1, err.decode()
        lines = [line for line in err.decode().splitlines() if " INFO " not in line]
        assert len(lines) == 1, err.decode()
        where = url.replace(f":{secret}@", "@")
        assert lines[0].startswith(f"meetnow: cannot use the store {where}: "), lines[0]
        assert secret not in err.decode() + out.decode()
        reason = lines[0].rsplit(": ", 1)[1]
        assert ("password authentication failed" in lines[0]) if problem == "wrong password" else reason


async def test_a_store_url_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    process = await _meetnow("new", cwd=tmp_path, store_url="mysql://root:hunter2@db/meetnow")
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert err.decode().strip() == (
        "meetnow: config key 'store.url' (or MEETNOW_STORE_URL) must start with postgresql:// "
        "(or be empty for SQLite)")
