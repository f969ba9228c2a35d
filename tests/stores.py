"""Both stores for the tests: SQLite in a temporary file, and a real PostgreSQL server.

PostgreSQL comes from Debian's ``postgresql`` package: one server per test session, its data
folder in a temporary directory, listening on 127.0.0.1 only (inside the tests' private
network namespace), started as the ``postgres`` user when the tests run as root (PostgreSQL
refuses root), and stopped at the end of the session, or by the kernel if the session dies
(``setpriv --pdeathsig``). Each test that asks gets a database of its own.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import asyncpg
import pytest

from meeting.config import Config
from meeting.store.base import Store
from meeting.store.postgres import PostgresStore
from meeting.store.sqlite import SqliteStore

USER = "meetnow"
START_TIMEOUT_S = 60.0


def _bin_dir() -> Path:
    """Debian keeps the server's programs out of PATH, one folder per major version."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("PostgreSQL is not installed: `make system-packages` installs Debian's postgresql")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A private PostgreSQL server: superuser ``meetnow``, password auth on 127.0.0.1."""

    def __init__(self, root: Path, host: str = "127.0.0.1", clients: str = "") -> None:
        """``host``: the address it listens on; ``clients``: a network (CIDR) allowed to log in
        from elsewhere than 127.0.0.1 (servers in other namespaces)."""
        self.root = root
        self.host = host
        self.clients = clients
        self.data = root / "data"
        self.log = root / "server.log"
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.bin = _bin_dir()
        # PostgreSQL refuses to run as root: the server runs as the package's own user.
        self.as_user = ["--reuid=postgres", "--regid=postgres", "--init-groups"] if os.geteuid() == 0 else []

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """A URL for ``database``, with the server's password unless another is given."""
        return f"postgresql://{USER}:{password or self.password}@{self.host}:{self.port}/{database}"

    def start(self) -> None:
        """initdb, then start the server and wait until it takes connections."""
        if self.as_user:
            shutil.chown(self.root, "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        if self.as_user:
            shutil.chown(pwfile, "postgres")
        subprocess.run(
            ["setpriv", *self.as_user, "--", str(self.bin / "initdb"), "-D", str(self.data), "-U", USER,
             "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync",
             "-E", "UTF8", "--locale=C"],
            check=True, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        pwfile.unlink()
        if self.clients:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.clients} scram-sha-256\n")
        for _ in range(3):  # another process may take the free port first
            self.port = _free_port()
            if self._run():
                return
        raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text()[-2000:]}")

    def _run(self) -> bool:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["setpriv", *self.as_user, "--pdeathsig=INT", "--", str(self.bin / "postgres"),
                 "-D", str(self.data), "-p", str(self.port), "-c", f"listen_addresses={self.host}",
                 "-c", f"unix_socket_directories={self.root}",
                 # Test data need not survive a power cut: skip the disk flushes.
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            ready = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)])
            if ready.returncode == 0:
                return True
            time.sleep(0.1)  # polling a starting server, bounded by the deadline above
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start within {START_TIMEOUT_S} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the data folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    async def create_database(self) -> str:
        """A fresh, empty database; returns its name."""
        name = f"t_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session (started on first use)."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="meetnow-pg-")))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def pg_url(postgres: PostgresServer) -> AsyncIterator[str]:
    """The URL of a database of this test's own, dropped afterwards."""
    name = await postgres.create_database()
    yield postgres.url(name)
    await postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def each_store(request: pytest.FixtureRequest, config: Config) -> AsyncIterator[Store]:
    """An opened store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        store: Store = SqliteStore(config.store.path)
        await store.open()
        yield store
        await store.close()
        return
    # Only the PostgreSQL half starts the server (a sync fixture: async ones cannot be asked for here).
    server: PostgresServer = request.getfixturevalue("postgres")
    name = await server.create_database()
    store = PostgresStore(server.url(name))
    await store.open()
    yield store
    await store.close()
    await server.drop_database(name)


def same_database(store: Store, **options: Any) -> Store:
    """A second, unopened store on ``store``'s database (another process's, or after a restart)."""
    if isinstance(store, PostgresStore):
        return PostgresStore(store.url, **options)
    assert isinstance(store, SqliteStore)
    return SqliteStore(store.path)


async def query(store: Store, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a plain query (no parameters) on either store, to look at what is kept."""
    if isinstance(store, PostgresStore):
        return [tuple(row) for row in await store.pool.fetch(sql)]
    assert isinstance(store, SqliteStore)
    async with store.db.execute(sql) as cursor:
        return [tuple(row) for row in await cursor.fetchall()]
