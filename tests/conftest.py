"""Fixtures shared by every test package: config, store, service, web client, browser."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser

from meeting.config import Config, MediaConfig, ServerConfig, StoreConfig, RecordingsConfig
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.browser import launch_chromium
from web.app import create_app


def make_config(tmp_path: Path, **server: object) -> Config:
    """A config for tests: files under tmp_path, media on loopback only."""
    return Config(
        server=ServerConfig(**server),  # type: ignore[arg-type]
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


@pytest.fixture
async def client(config: Config, meetings: MeetingService) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(config, meetings))) as client:
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

