"""The shipped deployment files (deploy/), fitted to a test: addresses, ports and paths
replaced, each replacement required to match, so a test breaks when the file changes shape."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

DEPLOY = Path(__file__).parents[1] / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def fitted(name: str, replacements: list[tuple[str, str]]) -> str:
    """deploy/<name> with each (old, new) applied; every ``old`` must occur."""
    text = (DEPLOY / name).read_text()
    for old, new in replacements:
        assert old in text, f"deploy/{name} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def self_signed(folder: Path, name: str = "meet.example.org", address: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``name`` and ``address``, and its key (made with openssl)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name},IP:{address}"],
                   check=True, capture_output=True)
    return cert, key


async def until_listening(host: str, port: int, process: subprocess.Popen[bytes], what: str,
                          timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start listening on {port}")
        await asyncio.sleep(0.05)


async def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        await asyncio.to_thread(process.wait, 10)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.wait)


@asynccontextmanager
async def nginx(folder: Path, site: str, wait_port: int, wait_host: str = "127.0.0.1",
                inside: tuple[str, ...] = ()) -> AsyncIterator[Path]:
    """Debian's nginx in the foreground with ``site`` as its only site; yields its error log.

    ``inside``: a command prefix that runs it elsewhere (``nsenter --net=...``), where it is
    reached on ``wait_host``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.conf").write_text(site)
    error_log = folder / "error.log"
    (folder / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {folder / 'nginx.pid'};
error_log {error_log} info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {folder / 'body'};
    proxy_temp_path {folder / 'proxy'};
    fastcgi_temp_path {folder / 'fastcgi'};
    uwsgi_temp_path {folder / 'uwsgi'};
    scgi_temp_path {folder / 'scgi'};
    include {folder / 'site.conf'};
}}
""")
    process = subprocess.Popen([*inside, NGINX, "-e", str(error_log), "-p", str(folder), "-c", str(folder / "nginx.conf"),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await until_listening(wait_host, wait_port, process, "nginx")
        yield error_log
    finally:
        await stop(process)
