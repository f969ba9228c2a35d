"""Fixtures shared by every test package: config, store, service, web client, browser."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser

from meeting.config import Config, MediaConfig, ServerConfig, StoreConfig, RecordingsConfig
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from bench.chromium import launch_chromium
from tests.stores import each_store, pg_url, postgres  # noqa: F401  (fixtures for every package)
from meeting.session.room import Room
from web.keys import SESSIONS
from web.server import Server, build_server


def make_config(tmp_path: Path, **server: object) -> Config:
    """A config for tests: files under tmp_path, media on loopback only."""
    return Config(
        # One process: tests look inside the live sessions (workers have tests of their own).
        server=ServerConfig(**{"workers": 1, **server}),  # type: ignore[arg-type]
        store=StoreConfig(path=str(tmp_path / "meetnow.sqlite3")),
        recordings=RecordingsConfig(folder=str(tmp_path / "recordings")),
        media=MediaConfig(announce_addresses=("127.0.0.1",), allowed_peer_networks=("127.0.0.0/8",)),
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
async def store(config: Config) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(config.store.path)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def meetings(store: SqliteStore, config: Config) -> MeetingService:
    return MeetingService(store, config.server.public_url)


@asynccontextmanager
async def serving(config: Config, store: SqliteStore, **build: Any) -> AsyncIterator[tuple[TestClient, Server]]:
    """The whole server (``build_server``) on a test HTTP server; background work not started."""
    server = build_server(config, store, **build)
    async with TestClient(TestServer(server.app)) as client:
        yield client, server
    await server.stop_background()


def room_of(client: TestClient, meeting_id: str) -> Room | None:
    """Who is in a meeting now, as its live session sees it (None when nobody is connected)."""
    session = client.server.app[SESSIONS].session(meeting_id)
    return session.room if session is not None else None


@pytest.fixture
async def client(config: Config, store: SqliteStore) -> AsyncIterator[TestClient]:
    async with serving(config, store) as (client, _):
        yield client


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, interval: float = 0.02
) -> None:
    """Wait until ``condition()`` is true, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async for launched in launch_chromium():
        yield launched

