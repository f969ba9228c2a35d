"""Choosing the store: PostgreSQL when ``store.url`` is set, else SQLite at ``store.path``."""

from __future__ import annotations

import sqlite3

import asyncpg

from meeting.config import StoreConfig
from meeting.store.base import Store
from meeting.store.postgres import PostgresStore
from meeting.store.sqlite import SqliteStore

# What opening or using a store raises when the database cannot be used (unreachable,
# refused, locked, unwritable): callers report these in one line instead of a traceback.
STORE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError,
)


def make_store(config: StoreConfig) -> SqliteStore | PostgresStore:
    """The configured store, not yet opened."""
    if config.url:
        return PostgresStore(config.url)
    return SqliteStore(config.path)


async def open_store(config: StoreConfig) -> Store:
    """The configured store, opened (connected and migrated); raises one of STORE_ERRORS."""
    store = make_store(config)
    await store.open()
    return store
