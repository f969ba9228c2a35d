"""The deployment files under deploy/, run for real: Debian's nginx (TLS, websocket upgrade)
in front of a meetnow server, and Debian's coturn on the shipped turnserver.conf."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint

from meeting.config import Config
from meeting.media.turn import mint_credential
from meeting.models import Origin
from meeting.store.sqlite import SqliteStore
from tests.conftest import room_of, serving, wait_for
from tests.coturn import TURNSERVER, free_port
from tests.deploy import DEPLOY, fitted, nginx, self_signed, stop, until_listening


def _site(tls: int, plain: int, upstream: int, cert: Path, key: Path) -> str:
    return fitted("nginx.conf", [
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{tls} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),
        ("listen 80;", f"listen 127.0.0.1:{plain};"),
        ("listen [::]:80;", ""),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream};"),
        ("/etc/letsencrypt/live/meet.example.org/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/meet.example.org/privkey.pem", str(key)),
    ])


async def test_nginx_with_tls_in_front_of_meetnow_carries_the_signaling_websocket(
        tmp_path: Path, config: Config, store: SqliteStore) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    async with serving(config, store) as (client, server):
        minted = await server.meetings.mint("Through nginx", Origin("web"))
        meeting_id = minted.meeting.id
        tls, plain = free_port(), free_port()
        site = _site(tls, plain, client.server.port, cert, key)
        async with nginx(tmp_path / "nginx", site, tls), aiohttp.ClientSession() as http:
            base = f"https://127.0.0.1:{tls}"
            # Plain HTTP is sent to HTTPS.
            async with http.get(f"http://127.0.0.1:{plain}/m/{meeting_id}", allow_redirects=False) as moved:
                assert moved.status == 301 and moved.headers["Location"].startswith("https://")
            async with http.get(f"{base}/m/{meeting_id}", ssl=trust) as page:
                assert page.status == 200 and "Content-Security-Policy" in page.headers
                assert "Server" not in page.headers or "nginx/" not in page.headers["Server"]
            async with http.ws_connect(f"wss://127.0.0.1:{tls}/m/{meeting_id}/ws", ssl=trust) as ws:
                await ws.send_json({"type": "join", "name": "Ada"})
                welcome = await _next(ws, "welcome")
                assert welcome["you"]["name"] == "Ada"
                await wait_for(lambda: (room := room_of(client, meeting_id)) is not None
                               and len(room.participants) == 1)
                # Messages flow both ways after the upgrade, not just the first one.
                await ws.send_json({"type": "chat", "text": "over TLS"})
                chat = await _next(ws, "chat")
                assert chat["text"] == "over TLS"
                await ws.send_json({"type": "leave"})
            await wait_for(lambda: room_of(client, meeting_id) is None, timeout=10)


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = await asyncio.wait_for(ws.receive_json(), max(0.1, deadline - time.monotonic()))
        if message["type"] == kind:
            return message


async def test_the_shipped_turnserver_conf_hands_out_relays_for_meetnows_credentials(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "turn.example.org")
    port, tls_port = free_port(), free_port()
    relay_low = 30000 + port % 20000
    secret = "a-long-random-secret-for-the-test"
    folder = tmp_path / "coturn"
    folder.mkdir()
    conf = fitted("turnserver.conf", [
        ("static-auth-secret=REPLACE-WITH-THE-SAME-LONG-RANDOM-SECRET-AS-MEETNOW", f"static-auth-secret={secret}"),
        ("listening-port=3478", f"listening-port={port}\nlistening-ip=127.0.0.1\nrelay-ip=127.0.0.1"),
        ("tls-listening-port=443", f"tls-listening-port={tls_port}"),
        ("/etc/letsencrypt/live/turn.example.org/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/turn.example.org/privkey.pem", str(key)),
        ("min-port=49152", f"min-port={relay_low}"),
        ("max-port=65535", f"max-port={relay_low + 100}"),
        ("log-file=syslog", f"log-file={folder / 'turn.log'}\npidfile={folder / 'pid'}\n"
                            f"userdb={folder / 'turndb'}"),
    ])
    (folder / "turnserver.conf").write_text(conf)
    process = subprocess.Popen([TURNSERVER, "-c", str(folder / "turnserver.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await until_listening("127.0.0.1", port, process, "turnserver")
        await until_listening("127.0.0.1", tls_port, process, "turnserver (TLS)")
        now = int(time.time())
        good = mint_credential(secret, now + 3600, "page")
        trust = ssl.create_default_context(cafile=str(cert))
        for transport, target, secure in (("udp", port, None), ("tcp", port, None), ("tcp", tls_port, trust)):
            relay, _ = await asyncio.wait_for(create_turn_endpoint(
                asyncio.DatagramProtocol, ("127.0.0.1", target), good.username, good.password,
                ssl=secure, transport=transport), 10)
            relay.close()
        late = mint_credential(secret, now - 1, "page")
        with pytest.raises(TransactionFailed):
            await asyncio.wait_for(create_turn_endpoint(
                asyncio.DatagramProtocol, ("127.0.0.1", port), late.username, late.password), 10)
    finally:
        await stop(process)
    assert (DEPLOY / "meetnow.service").read_text().count("ExecStart=") == 1
