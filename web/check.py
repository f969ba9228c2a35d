"""``meetnow check``: what would break a real deployment, found before people find it.

Each check gives findings: fine ones say what was checked, problems say what to change.
Nothing here changes the configuration or the store; the TURN probe makes one allocation
per configured TURN URL (released at once) and gives up after a few seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from aioice.stun import TransactionFailed, TransactionTimeout
from aioice.turn import create_turn_endpoint
from aiortc.rtcicetransport import parse_stun_turn_uri

from meeting.config import Config
from meeting.media.ice import local_addresses
from meeting.media.turn import TurnCredentials

PROBE_TIMEOUT = 5.0  # seconds for one TURN server to answer an allocation


@dataclass(frozen=True)
class Finding:
    """One check's result: ``ok`` or a problem, with what to change when it is one."""

    ok: bool
    key: str  # the configuration key (or area) it is about
    text: str

    def line(self) -> str:
        return f"{'ok     ' if self.ok else 'PROBLEM'} {self.key}: {self.text}"


async def run_checks(config: Config, *, addresses: Callable[[], Iterable[str]] = local_addresses,
                     timeout: float = PROBE_TIMEOUT) -> list[Finding]:
    """Every check, in a stable order. ``addresses`` lists the machine's interface addresses."""
    findings = [check_public_url(config), *check_tls(config), check_media_address(config, list(addresses()))]
    findings += await check_turn(config, timeout)
    findings += await asyncio.to_thread(check_folders, config)
    return findings


def check_public_url(config: Config) -> Finding:
    url = config.server.public_url
    if not url.startswith("https://"):
        return Finding(False, "server.public_url",
                       f"{url} is not HTTPS: browsers allow camera and microphone only on HTTPS pages. "
                       "Serve HTTPS (a reverse proxy such as deploy/nginx.conf, or server.tls_cert and "
                       "server.tls_key) and set public_url to its https:// address")
    host = urlsplit(url).hostname or ""
    if host in ("localhost", "127.0.0.1", "::1"):
        return Finding(False, "server.public_url",
                       f"{url} points at this machine only: set it to the address people reach")
    return Finding(True, "server.public_url", f"{url} is HTTPS")


def check_tls(config: Config) -> list[Finding]:
    server = config.server
    if not server.tls_cert:
        return []
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        return [Finding(False, "server.tls_cert",
                        f"the certificate {server.tls_cert} and key {server.tls_key} cannot be loaded "
                        f"({_reason(exc)}): point both at readable PEM files that belong together")]
    return [Finding(True, "server.tls_cert", "certificate and key load")]


def check_media_address(config: Config, addresses: list[str]) -> Finding:
    media = config.media
    relay = bool(config.turn.urls) or any(u.startswith(("turn:", "turns:")) for s in media.ice_servers
                                          for u in s.urls)
    announced = list(media.announce_addresses)
    if announced:
        public = [a for a in announced if _is_public(a)]
        if public or relay:
            return Finding(True, "media.announce_addresses", f"media is offered on {', '.join(announced)}"
                           + ("" if public else " and through TURN"))
        return Finding(False, "media.announce_addresses",
                       f"only private or loopback addresses are announced ({', '.join(announced)}): browsers "
                       "outside this network cannot send media. Announce the public address (and forward "
                       "UDP to this machine), or configure [turn]")
    candidates = [a for a in addresses if not _is_loopback(a)]
    if any(_is_public(a) for a in candidates):
        return Finding(True, "media.announce_addresses", "this machine has a public interface address")
    if relay:
        return Finding(True, "media.announce_addresses",
                       "no public interface address, but media can go through TURN")
    shown = ", ".join(candidates[:4]) or "none"
    return Finding(False, "media.announce_addresses",
                   f"this machine has only private addresses ({shown}) and none is announced: browsers "
                   "outside its network cannot reach its media. Set media.announce_addresses to the "
                   "public address (forwarding UDP to this machine), or configure [turn]")


async def check_turn(config: Config, timeout: float) -> list[Finding]:
    """Make (and release) one allocation on each configured TURN URL."""
    probes: list[tuple[str, str, str, str]] = []  # (key, url, username, password)
    if config.turn.urls:
        credential = TurnCredentials(config.turn.urls, config.turn.secret, config.turn.ttl).mint()
        probes += [("turn.urls", url, credential.username, credential.password)
                   for url in config.turn.urls if url.startswith(("turn:", "turns:"))]
    for server in config.media.ice_servers:
        probes += [("media.ice_servers", url, server.username, server.credential)
                   for url in server.urls if url.startswith(("turn:", "turns:"))]
    return list(await asyncio.gather(*(_probe(key, url, user, password, timeout)
                                       for key, url, user, password in probes)))


async def _probe(key: str, url: str, username: str, password: str, timeout: float) -> Finding:
    try:
        parsed = parse_stun_turn_uri(url)
    except ValueError:
        return Finding(False, key, f"{url} is not a TURN URL (turn:host:port?transport=udp)")
    transport = parsed["transport"] or "udp"
    secure = parsed["scheme"] == "turns"
    if (secure and transport != "tcp") or transport not in ("udp", "tcp"):
        return Finding(False, key, f"{url}: only UDP, TCP and TLS over TCP can be used")
    try:
        relay, _ = await asyncio.wait_for(create_turn_endpoint(
            asyncio.DatagramProtocol, (parsed["host"], parsed["port"]), username, password,
            ssl=secure, transport=transport), timeout)
    except asyncio.TimeoutError:
        return Finding(False, key, f"{url} did not answer within {timeout:g} s: is coturn running there, and "
                       f"is {transport.upper()} port {parsed['port']} open in every firewall on the way?")
    except TransactionFailed as exc:
        code, reason = exc.response.attributes.get("ERROR-CODE", (0, "error"))
        if code == 401:
            return Finding(False, key, f"{url} refused the credentials (401): the secret must equal coturn's "
                           "static-auth-secret, with use-auth-secret on"
                           if key == "turn.urls" else f"{url} refused the username and credential (401)")
        return Finding(False, key, f"{url} refused the allocation ({code} {reason})")
    except TransactionTimeout:
        return Finding(False, key, f"{url} stopped answering during the allocation: check its firewall")
    except (OSError, ssl.SSLError) as exc:
        return Finding(False, key, f"{url} cannot be reached ({_reason(exc)}): check the host, the port and "
                       "that coturn listens there")
    relayed: Any = relay.get_extra_info("sockname")
    relay.close()
    return Finding(True, key, f"{url} answered and relays from {relayed[0]}")


def check_folders(config: Config) -> list[Finding]:
    """The store's and the recordings' folders take files, and the disk has room."""
    findings = []
    for key, folder in (("store.path", Path(config.store.path).parent),
                        ("recordings.folder", Path(config.recordings.folder))):
        problem = _writable(folder)
        findings.append(Finding(problem is None, key, f"{folder} is writable" if problem is None else
                                f"{folder} cannot be written ({problem}): create it and give it to the "
                                "user meetnow runs as"))
    folder = Path(config.recordings.folder)
    existing = next((p for p in (folder, *folder.absolute().parents) if p.exists()), Path("/"))
    free_mb = shutil.disk_usage(existing).free // (1024 * 1024)
    floor = config.recordings.min_free_mb
    if free_mb < floor:
        findings.append(Finding(False, "recordings.min_free_mb",
                                f"{free_mb} MB free under {folder}, below the floor of {floor} MB: recording "
                                "would refuse to start. Free space, or move recordings.folder to a "
                                "larger disk"))
    else:
        findings.append(Finding(True, "recordings.min_free_mb", f"{free_mb} MB free under {folder}"))
    return findings


def _writable(folder: Path) -> str | None:
    """None when a file can be made in ``folder`` (or, while it is missing, in the nearest
    folder above it, where the server will make it), else why not. Nothing is left behind;
    run it as the user the server runs as (root may write where that user cannot)."""
    target = next((p for p in (folder, *folder.absolute().parents) if p.exists()), Path("/"))
    try:
        fd, name = tempfile.mkstemp(dir=target, prefix=".meetnow-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return _reason(exc)
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _is_public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_global
    except ValueError:
        return False
