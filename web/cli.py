"""The ``meetnow`` command: the composition root that builds the store, services and server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import Sequence

from meeting.config import Config, ConfigError, load_config
from meeting import ids
from meeting.logfmt import kv, printable
from meeting.models import Origin
from meeting.recording.model import COMPOSING, DELETED, FAILED, Recording
from meeting.recording.worker import LOCK_NAME
from meeting.service import MeetingService, TitleError
from meeting.store import STORE_ERRORS, make_store
from meeting.store.base import Store

from meeting import eventloop, logsetup
from .check import run_checks
from .edge import Edge
from .fdlimit import raise_open_file_limit
from .metrics import serve_metrics
from .recordings import format_length
from .server import build_server

log = logging.getLogger("meetnow")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meetnow`` console script."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"meetnow: {exc}", file=sys.stderr)
        return 2
    logsetup.configure(config.log)
    if args.command == "check":
        return asyncio.run(check(config))
    if args.command == "serve":
        return eventloop.run(serve(config), config.server.event_loop)
    if args.command == "new":
        return asyncio.run(new(config, args.title, args.e2ee))
    if args.command == "recordings":
        if args.retry is not None:
            return asyncio.run(retry_recording(config, args.retry))
        return asyncio.run(list_recordings(config, args.all))
    _parser().print_help()
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meetnow", description="Self-hosted meet-now links.")
    sub = parser.add_subparsers(dest="command")
    serve_cmd = sub.add_parser("serve", help="run the server")
    new_cmd = sub.add_parser("new", help="mint a meeting and print its links")
    new_cmd.add_argument("--title", help="meeting title")
    new_cmd.add_argument("--e2ee", action="store_true",
                         help="end-to-end encrypted: the key is printed in the links and kept nowhere")
    recordings_cmd = sub.add_parser("recordings", help="list recordings with their links and expiry")
    recordings_cmd.add_argument("--all", action="store_true", help="include deleted recordings")
    recordings_cmd.add_argument("--retry", metavar="ID",
                                help="compose a failed recording again (its id, or the short id the log shows)")
    check_cmd = sub.add_parser("check", help="report settings that break real deployments (exit 1 if any)")
    for cmd in (serve_cmd, new_cmd, recordings_cmd, check_cmd):
        cmd.add_argument("--config", help="path to a TOML config file (default: built-in defaults)")
    return parser


async def _open_store(config: Config) -> Store | None:
    """The opened store, or None after one line on stderr saying why it cannot be used."""
    store = make_store(config.store)
    try:
        await store.open()
    except STORE_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror + (f" ({printable(str(exc.filename))})" if exc.filename else "")
        print(f"meetnow: cannot use the store {printable(store.where)}: {reason}", file=sys.stderr)
        return None
    return store


async def new(config: Config, title: str | None, e2ee: bool = False) -> int:
    """Mint one meeting from the command line and print its join and host links."""
    store = await _open_store(config)
    if store is None:
        return 1
    try:
        minted = await MeetingService(store, config.server.public_url).mint(title, Origin("cli"), e2ee)
        if e2ee:
            minted = MeetingService.with_media_key(minted)
    except TitleError as exc:
        print(f"meetnow: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()
    print(f"Join link: {minted.url}")
    print(f"Host link: {minted.host_url}")
    print("Share the join link; keep the host link to yourself.")
    return 0


async def list_recordings(config: Config, include_deleted: bool) -> int:
    """Print every recording: state, when, length, until when it is kept, title and link.

    Titles come from chat and the web: control characters in them are shown as escapes, so
    a title cannot move the cursor, retitle the terminal or hide a line.
    """
    store = await _open_store(config)
    if store is None:
        return 1
    try:
        rows = await store.all_recordings()
    finally:
        await store.close()
    base = config.server.public_url.rstrip("/")
    shown = [(r, title) for r, title in rows if include_deleted or r.state != DELETED]
    if not shown:
        print("No recordings.")
        return 0
    print(f"{'state':<10} {'recorded (UTC)':<17} {'length':>9} {'kept until':<11} title")
    for recording, title in shown:
        length = format_length(recording.duration) if recording.duration else "-"
        until = (recording.deleted_at or recording.expires_at).date().isoformat()
        state = recording.state
        if state == COMPOSING and not await _compose_started(config, recording):
            state = "queued"
        print(f"{state:<10} {recording.started_at.strftime('%Y-%m-%d %H:%M'):<17} {length:>9} "
              f"{until:<11} {printable(title)}")
        if recording.state != DELETED:
            print(f"{'':<10} {base}/r/{recording.id}")
        if recording.state == FAILED:
            print(f"{'':<10} {recording.error[:200]}")
            print(f"{'':<10} to try again: meetnow recordings --retry {ids.short(recording.id)}")
    return 0


async def _compose_started(config: Config, recording: Recording) -> bool:
    """Whether composing ``recording`` has begun: its first attempt leaves the folder's lock file."""
    lock = Path(config.recordings.folder) / recording.id / LOCK_NAME
    return await asyncio.to_thread(lock.exists)


async def retry_recording(config: Config, token: str) -> int:
    """Queue a failed recording for composing again: a running server picks it up within a
    minute, a stopped one at its next start. ``token`` is the id or its short form."""
    store = await _open_store(config)
    if store is None:
        return 1
    try:
        return await _retry(store, token)
    except STORE_ERRORS as exc:  # locked for longer than the busy timeout, most likely
        print(f"meetnow: the store cannot be changed now ({exc}); try again", file=sys.stderr)
        return 1
    finally:
        await store.close()


async def _retry(store: Store, token: str) -> int:
    rows = [r for r, _ in await store.all_recordings()]
    found = _matching(rows, token)
    if len(found) != 1:
        shown = ", ".join(f"{r.started_at:%Y-%m-%d %H:%M} ({r.state})" for r in found[:5])
        problem = (f"several recordings start with {token!r}: {shown}; give more of the id" if found
                   else f"no recording matches {token!r}")
        print(f"meetnow: {problem}", file=sys.stderr)
        return 2
    [recording] = found
    short = ids.short(recording.id)
    if recording.state == COMPOSING:
        print(f"Recording {short} is already waiting to be composed.")
        return 0
    if recording.state != FAILED:
        print(f"meetnow: recording {short} is {recording.state}, not failed: only failed recordings can be retried",
              file=sys.stderr)
        return 2
    if not await store.recording_retry(recording.id):
        print(f"meetnow: recording {short} changed meanwhile; list it again", file=sys.stderr)
        return 2
    print(f"Recording {short} will be composed again: by the running server within a minute, "
          "or when the server next starts.")
    return 0


def _matching(rows: list[Recording], token: str) -> list[Recording]:
    """Recordings whose id is ``token``, or starts with it (a short id, with or without its ellipsis)."""
    token = token.strip().rstrip("…").rstrip(".")
    if not token:
        return []
    exact = [r for r in rows if r.id == token]
    return exact or [r for r in rows if r.id.startswith(token)]


async def check(config: Config) -> int:
    """Print what was checked and what to change; 1 when anything needs changing."""
    findings = await run_checks(config)
    for finding in findings:
        print(finding.line())
    problems = sum(not f.ok for f in findings)
    print(f"{problems} problem{'s' if problems != 1 else ''} found." if problems else "No problems found.")
    return 1 if problems else 0


async def serve(config: Config) -> int:
    """Run the web server until SIGINT or SIGTERM; 1 when it cannot start."""
    open_files = raise_open_file_limit()
    store = await _open_store(config)
    if store is None:
        return 1
    try:
        return await _serve(config, store, open_files)
    finally:
        await store.close()


async def _serve(config: Config, store: Store, open_files: int) -> int:
    server = build_server(config, store)
    edge = Edge(server.app, config, open_files)
    await edge.setup()
    # Background work starts before the first request can arrive (see start_background).
    await server.start_background()
    metrics_runner = None
    where = f"{config.server.host}:{config.server.port}"
    try:
        await edge.listen(_tls(config))
        if config.metrics.enabled and config.metrics.listen:
            where = config.metrics.listen
            metrics_runner = await serve_metrics(server.metrics, config)
    except OSError as exc:
        print(f"meetnow: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        await server.stop_background()
        await edge.close()
        return 1
    log.info("serving %s", kv(listen=f"{config.server.host}:{config.server.port}",
                              public_url=config.server.public_url))
    if config.discord.token and config.discord.application_id:
        from bot.discord_bot import invite_url

        print(f"Discord invite: {invite_url(config.discord.application_id)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    await server.stop_background()
    await edge.close()
    return 0


def _tls(config: Config) -> ssl.SSLContext | None:
    if not config.server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.server.tls_cert, config.server.tls_key)
    return context
