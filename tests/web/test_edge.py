"""``meetnow serve`` against hostile clients: a real process, a low open-file limit, loopback.

Floods are bounded (1,000 connections at most) and every wait has a deadline. Clients come
from several loopback addresses (127.0.0.0/8 is all local) to stand for different people.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import resource
import socket
import ssl
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from meeting import ids
from meeting.models import Meeting, Origin
from meeting.recording.model import RECORDING, Recording
from meeting.store.sqlite import SqliteStore
from tests.conftest import wait_for

FLOOD = 1000
PARTIAL = b"GET / HTTP/1.1\r\nHost: meetnow\r\n"  # a request's headers, begun and never finished


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Served:
    """A running ``meetnow serve``: its process, port and log file."""

    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="backslashreplace")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]

    def soft_open_file_limit(self) -> int:
        limits = Path(f"/proc/{self.process.pid}/limits").read_text()
        return int(re.search(r"^Max open files\s+(\d+)", limits, re.M).group(1))  # type: ignore[union-attr]


def _config(tmp_path: Path, port: int, **server: object) -> Path:
    lines = [f"port = {port}", f'public_url = "http://127.0.0.1:{port}"']
    lines += [f"{key} = {value}" for key, value in server.items()]
    path = tmp_path / "meetnow.toml"
    path.write_text("[server]\n" + "\n".join(lines) + f'\n[store]\npath = "{tmp_path / "s.sqlite3"}"\n'
                    f'[recordings]\nfolder = "{tmp_path / "recordings"}"\n')
    return path


MEETNOW = (sys.executable, "-c", "from web.cli import main; raise SystemExit(main())")


async def _meetnow(*args: str, cwd: Path, nofile: tuple[int, int] | None = None,
                   stdout: Any = asyncio.subprocess.PIPE,
                   stderr: Any = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    def limit() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    return await asyncio.create_subprocess_exec(*MEETNOW, *args, cwd=cwd, stdout=stdout,
                                                stderr=stderr, preexec_fn=limit)


async def _finished(process: asyncio.subprocess.Process, timeout: float = 30) -> tuple[bytes, bytes]:
    """Its output once it exits; killed, and the test failed, if it runs past ``timeout``."""
    try:
        return await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"meetnow still running after {timeout} s") from None


async def _healthy(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as r:
            return r.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


@asynccontextmanager
async def meetnow_serve(tmp_path: Path, nofile: tuple[int, int] | None = None,
                        **server: object) -> AsyncIterator[Served]:
    """Start ``meetnow serve`` with these ``[server]`` keys; stop it with SIGTERM after."""
    port = _free_port()
    config = _config(tmp_path, port, **server)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = await _meetnow("serve", "--config", str(config), cwd=tmp_path, nofile=nofile,
                                 stdout=asyncio.subprocess.DEVNULL, stderr=log_file)
    served = Served(process, port, log_path)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_for(lambda: _healthy(http, served.url), timeout=30)
        yield served
    finally:
        if process.returncode is None:
            process.terminate()
            await _finished(process)
    assert process.returncode == 0, served.log()[-3000:]


def _raise_own_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= needed, f"the test needs {needed} open files; the hard limit here is {hard}"
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Slowloris:
    """Connections that begin a request and add a header line every second, never finishing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []
        self.ends: list[asyncio.Task[bytes]] = []
        self._trickle: asyncio.Task[None] | None = None

    async def open(self, count: int, sources: list[str]) -> None:
        for i in range(count):
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(sources[i % len(sources)], 0)), 30)
            writer.write(PARTIAL)
            self.writers.append(writer)
            self.ends.append(asyncio.create_task(self._until_closed(reader)))
        self._trickle = self._trickle or asyncio.create_task(self._trickle_headers())

    async def cut(self, timeout: float) -> list[bytes]:
        """What each connection received before the server closed it; fails after ``timeout``."""
        done, pending = await asyncio.wait(self.ends, timeout=timeout)
        assert not pending, f"{len(pending)} of {len(self.ends)} slow connections still open"
        return [task.result() for task in self.ends]

    async def close(self) -> None:
        if self._trickle:
            self._trickle.cancel()
        for task in self.ends:
            task.cancel()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.ends, *([self._trickle] if self._trickle else []),
                             return_exceptions=True)

    @staticmethod
    async def _until_closed(reader: asyncio.StreamReader) -> bytes:
        received = b""
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        return received

    async def _trickle_headers(self) -> None:
        for n in range(120):  # two minutes at most
            await asyncio.sleep(1)
            for writer in self.writers:
                if not writer.is_closing():
                    writer.write(f"X-Slow-{n}: 1\r\n".encode())


async def _probe_health(url: str, stop: asyncio.Event, source: str) -> list[int | str]:
    """GET /healthz from ``source`` until ``stop``: every answer's status, or what failed."""
    answers: list[int | str] = []
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        while not stop.is_set():
            try:
                async with http.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=15)) as r:
                    answers.append(r.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                answers.append(type(exc).__name__)
            await asyncio.sleep(0.1)
    return answers


async def test_slowloris_flood_is_cut_while_health_checks_answer(tmp_path: Path) -> None:
    _raise_own_open_file_limit(FLOOD + 200)
    async with meetnow_serve(tmp_path, nofile=(256, 1024), header_timeout=3) as served:
        # The soft limit was raised to the hard one, said once, and half of it is for clients.
        assert served.soft_open_file_limit() == 1024
        assert "open files limit=1024 was=256" in served.log()
        assert "connection limits total=512 per_address=100 header_timeout=3" in served.log()
        files, rss = served.open_files(), served.rss_kib()

        stop = asyncio.Event()
        probe = asyncio.create_task(_probe_health(served.url, stop, "127.0.0.2"))
        flood = Slowloris(served.port)
        try:
            # Twenty addresses, fifty each: under the per-address limit, twice the total.
            await flood.open(FLOOD, [f"127.0.1.{i}" for i in range(1, 21)])
            received = await flood.cut(timeout=60)
        finally:
            stop.set()
            await flood.close()
        answers = await probe
        # Every slow connection was closed by the server without an answer (the total limit
        # made the oldest waiting ones give way; the rest hit the header deadline).
        assert received == [b""] * FLOOD
        assert answers and all(a == 200 for a in answers), answers

        # Descriptors and memory go back to about where they were; the log stayed small.
        await wait_for(lambda: served.open_files() <= files + 2, timeout=30)
        assert served.rss_kib() < rss + 16 * 1024, (rss, served.rss_kib())  # about 4 MiB here
        log = served.log()
        assert "reason=\"request headers too slow\"" in log
        assert len(log) < 200_000, len(log)  # the same flood wrote 61 MB in 25 s before
        assert "Traceback" not in log
        async with aiohttp.ClientSession() as http:
            assert await _healthy(http, served.url)
    # At exit, the lines that were held back are counted.
    assert re.search(r"connection closed remote=127\.0\.1\.\d+ .* repeated \d+ more times", served.log())


async def test_one_address_is_held_to_its_share(tmp_path: Path) -> None:
    _raise_own_open_file_limit(400)
    # A header timeout long enough that no admitted connection is cut during the test.
    async with meetnow_serve(tmp_path, nofile=(1024, 1024), header_timeout=60,
                             max_connections_per_address=50) as served:
        stop = asyncio.Event()
        probe = asyncio.create_task(_probe_health(served.url, stop, "127.0.0.2"))
        flood = Slowloris(served.port)
        try:
            await flood.open(200, ["127.0.0.1"])
            await wait_for(lambda: sum(task.done() for task in flood.ends) >= 150, timeout=30)
            refused = [task.result() for task in flood.ends if task.done()]
            held = sum(not task.done() for task in flood.ends)
        finally:
            stop.set()
            await flood.close()
        answers = await probe
        assert (len(refused), held) == (150, 50)
        assert all(r.startswith(b"HTTP/1.1 429 Too Many Requests\r\n") for r in refused)
        assert all(b"\r\nContent-Security-Policy: " in r and b"nosniff" in r for r in refused)
        assert answers and all(a == 200 for a in answers), answers
        await wait_for(lambda: "connection refused remote=127.0.0.1" in served.log(), timeout=10)
        assert served.log().count("connection refused remote=127.0.0.1") == 5  # then a count
    assert "connection refused remote=127.0.0.1 reason=\"per-address limit\" limit=50 ... " \
           "repeated 145 more times" in served.log()


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), 30)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def _headers(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {name.lower(): value for name, value in (line.split(": ", 1) for line in head)}


async def test_hostile_requests_get_plain_answers_and_leave_a_clean_log(tmp_path: Path) -> None:
    async with meetnow_serve(tmp_path, body_timeout=2) as served:
        # Refused by aiohttp's parser, below the application.
        bad = [b"GET /\x00x HTTP/1.1\r\nHost: a\r\n\r\n",
               b"BAD\x01 / HTTP/1.1\r\n\r\n",
               b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"]
        for request in bad * 10:
            answer = await _raw(served.port, request)
            assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:200]
            headers = _headers(answer)
            assert headers["content-security-policy"].startswith("default-src 'self'")
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["server"] == "meetnow"
            assert b"aiohttp" not in answer.lower() and b"python" not in answer.lower()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{served.url}/") as response:
                assert response.headers["Server"] == "meetnow"
            # JSON that makes Python's parser raise, or gives values that fail later.
            for body in ('{"title": ' + "7" * 5000 + "}",
                         '{"title": ' + "[" * 30_000 + "]" * 30_000 + "}",
                         '{"title": "\\ud800"}'):
                async with http.post(f"{served.url}/api/meetings", data=body,
                                     headers={"Content-Type": "application/json"}) as response:
                    assert response.status == 400
                    assert "not valid JSON" in (await response.json())["error"]
            # Read before the handler runs, a body over the size limit is still a 413.
            async with http.post(f"{served.url}/api/meetings", data="x" * 70_000,
                                 headers={"Content-Type": "application/json"}) as response:
                assert response.status == 413
                assert "too large" in (await response.json())["error"]
            # Control characters in a path reach the access log only as escapes.
            async with http.get(f"{served.url}/m/%1b%5d0;owned%07%1b[2J%00%0dx") as response:
                assert response.status == 404
        # Bodies that cannot be read: garbage under a Content-Encoding, a client gone mid-body.
        answer = await _raw(served.port, b"POST /api/meetings HTTP/1.1\r\nHost: a\r\n"
                                         b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
                                         b"Content-Length: 5\r\n\r\nabcde")
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"POST /api/meetings HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50\r\n\r\n{")
        await writer.drain()
        await wait_for(lambda: "request body unreadable" in served.log(), timeout=10)  # the gzip one
        writer.close()
        await wait_for(lambda: 'reason="Connection lost"' in served.log(), timeout=10)
        # A body that never finishes arriving.
        answer = await _raw(served.port, b"POST /api/meetings HTTP/1.1\r\nHost: a\r\n"
                                         b"Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{")
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b'{"error": "request timeout"}' in answer
        await wait_for(lambda: "request body too slow" in served.log(), timeout=10)
        log = served.log()
        assert "Traceback" not in log and " ERROR " not in log
        assert 'path="/m/\\x1b]0;owned\\x07\\x1b[2J\\x00\\rx" status=404' in log
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", log)
        assert log.count("refused request remote=127.0.0.1 status=400") <= 3 * 5
    assert "refused request remote=127.0.0.1 status=400 reason=\"Invalid method encountered:\" ... " \
           "repeated 5 more times" in served.log()


async def test_unwritable_store_exits_at_once_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    config = tmp_path / "meetnow.toml"
    config.write_text(f'[server]\nport = {_free_port()}\n[store]\npath = "{folder / "s.sqlite3"}"\n'
                      f'[recordings]\nfolder = "{tmp_path / "recordings"}"\n')
    made = await _meetnow("new", "--config", str(config), cwd=tmp_path)
    await _finished(made)
    assert made.returncode == 0  # the store exists, then turns read-only
    args = ("serve", "--config", str(config))
    if os.geteuid() == 0:
        # Root writes through file modes: a read-only bind mount in a private mount namespace.
        process = await asyncio.create_subprocess_exec(
            "unshare", "--mount", "sh", "-c", 'mount -o bind,ro "$0" "$0" && exec "$@"', str(folder),
            *MEETNOW, *args,
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    else:
        for path in folder.iterdir():
            path.chmod(0o444)
        folder.chmod(0o555)
        process = await _meetnow(*args, cwd=tmp_path)
    out, err = await _finished(process)
    assert process.returncode == 1, err.decode()
    lines = [line for line in err.decode().splitlines() if " INFO " not in line]
    assert len(lines) == 1 and lines[0].startswith(
        f"meetnow: cannot use the store {folder / 's.sqlite3'}: "), err.decode()
    assert "database" in lines[0]  # sqlite's own reason, e.g. "unable to open database file"


async def test_store_below_a_file_exits_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    config = tmp_path / "meetnow.toml"
    config.write_text(f'[server]\nport = {_free_port()}\n[store]\npath = "{tmp_path / "a-file" / "s.sqlite3"}"\n')
    for command in ("serve", "new", "recordings"):
        process = await _meetnow(command, "--config", str(config), cwd=tmp_path)
        out, err = await _finished(process)
        assert process.returncode == 1
        lines = [line for line in err.decode().splitlines() if " INFO " not in line]
        assert lines == [f"meetnow: cannot use the store {tmp_path / 'a-file' / 's.sqlite3'}: "
                         f"File exists ({tmp_path / 'a-file'})"], err.decode()


async def test_recordings_listing_shows_control_characters_as_escapes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        title = "Retro\x1b]0;owned\x07\x1b[2J\x00\rfake line\u202etxt.exe"
        meeting = Meeting(id=ids.new_id(), title=title, created_at=datetime.now(timezone.utc),
                          origin=Origin("web"))
        await store.add_meeting(meeting, ids.hash_key(ids.new_host_key()))
        now = datetime.now(timezone.utc)
        await store.add_recording(Recording(id=ids.new_id(), meeting_id=meeting.id, state=RECORDING,
                                            started_at=now, expires_at=now + timedelta(days=30)))
    finally:
        await store.close()
    config = tmp_path / "meetnow.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "s.sqlite3"}"\n')
    process = await _meetnow("recordings", "--config", str(config), cwd=tmp_path)
    out, err = await _finished(process)
    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert "Retro\\x1b]0;owned\\x07\\x1b[2J\\x00\\rfake line\\u202etxt.exe" in text
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f\u202e]", text)


async def test_idle_websockets_from_one_address_are_held_to_its_share(tmp_path: Path) -> None:
    async with meetnow_serve(tmp_path, max_connections_per_address=10) as served:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{served.url}/api/meetings", json={"title": "Idle"}) as response:
                meeting = (await response.json())["id"]
        socket_url = f"{served.url}/m/{meeting}/ws"
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.3", 0), limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            idle = [await http.ws_connect(socket_url) for _ in range(10)]
            try:
                await http.ws_connect(socket_url)
                raise AssertionError("an eleventh websocket from one address was let in")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 429
            # Someone else still gets in.
            others = aiohttp.TCPConnector(local_addr=("127.0.0.4", 0))
            async with aiohttp.ClientSession(connector=others) as other:
                async with other.ws_connect(socket_url):
                    pass
            # A closed one gives its place back.
            await idle.pop().close()
            async def admitted() -> bool:
                try:
                    idle.append(await http.ws_connect(socket_url))
                    return True
                except aiohttp.WSServerHandshakeError:
                    return False

            await wait_for(admitted, timeout=10)
            for ws in idle:
                await ws.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_is_served_and_a_stalled_handshake_is_cut(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = _free_port()
    config = tmp_path / "meetnow.toml"
    config.write_text(f'[server]\nport = {port}\npublic_url = "https://127.0.0.1:{port}"\n'
                      f'tls_cert = "{cert}"\ntls_key = "{key}"\nheader_timeout = 2\n'
                      f'[store]\npath = "{tmp_path / "s.sqlite3"}"\n'
                      f'[recordings]\nfolder = "{tmp_path / "recordings"}"\n')
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = await _meetnow("serve", "--config", str(config), cwd=tmp_path,
                                 stdout=asyncio.subprocess.DEVNULL, stderr=log_file)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            await wait_for(lambda: _healthy(http, url), timeout=30)
            async with http.get(f"{url}/") as response:
                assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
                assert response.headers["Server"] == "meetnow"
        # Connected, and never a TLS ClientHello: closed once the header timeout has passed.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await asyncio.wait_for(reader.read(), 30) == b""
        except ConnectionResetError:
            pass
        writer.close()
        # A request aiohttp's parser refuses gets the site's headers over TLS too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.write(b"BAD\x01 / HTTP/1.1\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
        assert _headers(answer)["strict-transport-security"] == "max-age=31536000"
    finally:
        process.terminate()
        await _finished(process)
    assert process.returncode == 0, log_path.read_text()[-3000:]
