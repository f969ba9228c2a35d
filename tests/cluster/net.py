"""A meetnow cluster for tests: nodes in network namespaces of their own, nginx in front.

Inside the test's private namespace (``tests/netns.sh``) each node, and the browsers' side,
gets a namespace of its own joined to the test's namespace by a veth pair: 10.88.N.1 on the
test's side, 10.88.N.2 inside, the test's namespace routing between them. PostgreSQL, Redis
and the fake Slack listen on the test's side (10.88.1.1), where every node reaches them. Each
node is a real ``meetnow serve`` process announcing its own address for media; nginx (the
shipped deploy/nginx-cluster.conf, fitted) and Chromium run in the browsers' namespace.
Nothing here reaches beyond the test's own namespace.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import aiohttp
from playwright.async_api import Browser, async_playwright
from redis.asyncio import Redis

from bench.chromium import CHROMIUM, CHROMIUM_ARGS
from bench.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from meeting.cluster.directory import PREFIX as MEETING_PREFIX
from tests.conftest import wait_for
from tests.deploy import fitted, nginx, self_signed, until_listening
from tests.servers import RedisServer
from tests.stores import PostgresServer

NETWORK = "10.88.0.0/16"
SERVICES = "10.88.1.1"  # PostgreSQL, Redis, the fake Slack: the test's side of node a's link
EDGE = 9  # the browsers' and nginx's namespace: 10.88.9.2
HTTPS_PORT = 8443
NODE_PORT = 8080
METRICS_PORT = 9100
START_TIMEOUT_S = 30.0


class Space:
    """A network namespace (held by a sleeping process) with one veth leg to the test's side."""

    def __init__(self, index: int, holder: subprocess.Popen[bytes]) -> None:
        self.index = index
        self.holder = holder
        self.address = f"10.88.{index}.2"
        self.gateway = f"10.88.{index}.1"
        self.outside = f"mnc{index}h"

    @property
    def prefix(self) -> tuple[str, ...]:
        """A command prefix that runs a program inside (and kills it if the test dies)."""
        return ("setpriv", "--pdeathsig=KILL", "--", "nsenter", f"--net=/proc/{self.holder.pid}/ns/net")

    @classmethod
    async def create(cls, index: int) -> "Space":
        holder = subprocess.Popen(["setpriv", "--pdeathsig=KILL", "--", "unshare", "--net", "sleep", "3600"])
        mine = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/net") == mine:  # until unshare has run
            if time.monotonic() > deadline or holder.poll() is not None:
                holder.kill()
                raise RuntimeError("unshare --net did not make a namespace")
            await asyncio.sleep(0.01)
        space = cls(index, holder)
        inside = f"mnc{index}p"
        try:
            _run("ip", "link", "add", space.outside, "type", "veth", "peer", "name", inside, "netns", str(holder.pid))
            _run("ip", "addr", "add", f"{space.gateway}/24", "dev", space.outside)
            _run("ip", "link", "set", space.outside, "up")
            for command in (("ip", "link", "set", "lo", "up"), ("ip", "addr", "add", f"{space.address}/24", "dev", inside),
                            ("ip", "link", "set", inside, "up"), ("ip", "route", "add", "default", "via", space.gateway)):
                _run(*space.prefix[3:], *command)
        except BaseException:
            await space.close()
            raise
        return space

    def wrapper(self, executable: str, folder: Path) -> Path:
        """A script that starts ``executable`` in here (for playwright's ``executable_path``:
        it talks to the browser over pipes, which cross namespaces)."""
        script = folder / f"in-space{self.index}-{Path(executable).name}"
        script.write_text(f'#!/bin/sh\nexec {" ".join(self.prefix)} {executable} "$@"\n')
        script.chmod(0o755)
        return script

    async def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)
        self.holder.kill()
        await asyncio.to_thread(self.holder.wait)


class Node:
    """One ``meetnow serve`` process in its own namespace, announcing its own address."""

    def __init__(self, name: str, space: Space, folder: Path, config: str) -> None:
        self.name = name
        self.space = space
        self.config = folder / "config.toml"
        self.log = folder / "node.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return self.space.address

    def owns(self, node_id: str | None) -> bool:
        """Whether a cluster node id (name + a suffix per run) is this node's."""
        return node_id is not None and node_id.rsplit("-", 1)[0] == self.name

    async def start(self) -> None:
        meetnow = Path(sys.executable).parent / "meetnow"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([*self.space.prefix, str(meetnow), "serve", "--config", str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT)
        await until_listening(self.address, NODE_PORT, self.process, f"node {self.name}", timeout=START_TIMEOUT_S)
        await until_listening(self.address, METRICS_PORT, self.process, f"node {self.name} metrics")

    async def kill(self) -> None:
        """kill -9: no goodbye to Redis, the store or the browsers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 10)

    async def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            await asyncio.to_thread(self.process.wait, 15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)

    async def metrics(self) -> dict[str, float]:
        """The node's own unlabelled Prometheus values, by name."""
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{self.address}:{METRICS_PORT}/metrics") as response:
                text = await response.text()
        return {m[1]: float(m[2]) for m in re.finditer(r"^(\w+) ([-0-9.e+]+)$", text, re.M)}

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-8000:] if self.log.exists() else ""


def node_config(name: str, space: Space, folder: Path, store_url: str, redis_url: str, slack: FakeSlack) -> str:
    return f"""
[server]
host = "{space.address}"
port = {NODE_PORT}
public_url = "https://10.88.{EDGE}.2:{HTTPS_PORT}"
max_connections_per_address = 0
workers = 1

[store]
url = "{store_url}"

[recordings]
folder = "{folder / 'recordings'}"
min_free_mb = 1

[media]
announce_addresses = ["{space.address}"]
allowed_peer_networks = ["{NETWORK}"]

[slack]
bot_token = "{BOT_TOKEN}"
signing_secret = "{SIGNING_SECRET}"
api_url = "{slack.api_url}"

[metrics]
enabled = true
listen = "{space.address}:{METRICS_PORT}"

[cluster]
redis_url = "{redis_url}"
node_id = "{name}"
"""


def nginx_site(nodes: list[Node], cert: Path, key: Path, access_log: Path) -> str:
    """deploy/nginx-cluster.conf on the browsers' address, the nodes' addresses and a test
    certificate, logging which node each request went to (whole meeting ids: a test's log)."""
    site = fitted("nginx-cluster.conf", [
        ("listen 443 ssl http2;", f"listen {HTTPS_PORT} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),
        ("listen 80;", "listen 8080;"),
        ("listen [::]:80;", ""),
        ("server 10.0.0.11:8080", f"server {nodes[0].address}:{NODE_PORT}"),
        ("server 10.0.0.12:8080", f"server {nodes[1].address}:{NODE_PORT}"),
        ("/etc/letsencrypt/live/meet.example.org/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/meet.example.org/privkey.pem", str(key)),
        ("access_log off;", f"access_log {access_log} upstreams;"),
    ])
    return "log_format upstreams '$upstream_addr $status $uri';\n" + site


class Cluster:
    """Everything running: see :func:`cluster`."""

    def __init__(self, folder: Path, spaces: list[Space], nodes: list[Node], redis_server: RedisServer,
                 redis: Redis, slack: FakeSlack, browser: Browser, cert: Path, access_log: Path) -> None:
        self.folder = folder
        self.spaces = spaces
        self.nodes = nodes
        self.redis_server = redis_server
        self.redis = redis
        self.slack = slack
        self.browser = browser
        self.cert = cert
        self.access_log = access_log
        self.url = f"https://10.88.{EDGE}.2:{HTTPS_PORT}"
        self.recordings = folder / "shared" / "recordings"  # the folder every node mounts

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    async def host_of(self, meeting_id: str) -> Node | None:
        """The node the directory names as the meeting's host (None when nobody hosts it)."""
        value = await self.redis.get(MEETING_PREFIX + meeting_id)
        owner = value.decode() if isinstance(value, bytes) else value
        return next((n for n in self.nodes if n.owns(owner)), None)

    async def ready(self) -> bool:
        """Every node running sees every other as alive."""
        running = [n for n in self.nodes if n.process is not None and n.process.poll() is None]
        for node in running:
            if (await node.metrics()).get("meetnow_cluster_nodes") != len(running):
                return False
        return True

    def upstreams(self, path: str) -> list[str]:
        """The node address (host:port) nginx sent each finished request for ``path`` to."""
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        return [line.split()[0] for line in lines if line.split()[-1] == path]

    async def idle(self) -> bool:
        """No socket, meeting or relay left on any running node (nginx then spreads the next
        sockets evenly again)."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            figures = await node.metrics()
            if any(figures.get(name) for name in ("meetnow_signaling_connections", "meetnow_meetings",
                                                  "meetnow_cluster_relayed_out", "meetnow_cluster_relayed_in")):
                return False
        return True

    async def describe(self) -> str:
        """What each node says of itself, and its last log lines: for a failing test's report."""
        parts = []
        for node in self.nodes:
            try:
                figures = {k.removeprefix("meetnow_"): v for k, v in (await node.metrics()).items()
                           if k.startswith(("meetnow_cluster", "meetnow_participants", "meetnow_meetings"))}
            except aiohttp.ClientError as exc:
                figures = {"unreachable": type(exc).__name__}
            lines = [line for line in node.tail().splitlines() if "aioice" not in line and "/static/" not in line]
            parts.append(f"--- node {node.name} {figures}\n" + "\n".join(lines[-15:]))
        return "\n".join(parts)

    async def until(self, condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
        """``wait_for`` that reports the nodes' state when ``what`` does not happen in time."""
        try:
            await wait_for(condition, timeout=timeout, interval=0.2)
        except AssertionError:
            raise AssertionError(f"{what}: not within {timeout} s\n{await self.describe()}") from None

    async def restart_dead(self) -> None:
        """Start again any node that is not running, and wait until every node sees all."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                await node.start()
        await self.until_ready()

    async def until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not await self.ready():
            if time.monotonic() > deadline:
                seen = {n.name: (await n.metrics()).get("meetnow_cluster_nodes") for n in self.nodes}
                raise RuntimeError(f"the nodes did not see each other ({seen}):\n"
                                   + "\n".join(n.tail() for n in self.nodes))
            await asyncio.sleep(0.2)


@asynccontextmanager
async def cluster(folder: Path) -> AsyncIterator[Cluster]:
    """Two nodes (a: 10.88.1.2, b: 10.88.2.2), PostgreSQL, Redis, the fake Slack, nginx and
    one Chromium, all started here and stopped on the way out."""
    async with AsyncExitStack() as stack:
        # The test's own namespace forwards between the legs (a namespace's own setting).
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        spaces = []
        for index in (1, 2, EDGE):
            space = await Space.create(index)
            stack.push_async_callback(space.close)
            spaces.append(space)
        edge = spaces[2]

        # Its own temporary folder: PostgreSQL runs as its own user, who cannot enter pytest's.
        postgres = PostgresServer(Path(tempfile.mkdtemp(prefix="meetnow-pg-")), host=SERVICES, clients=NETWORK)
        await asyncio.to_thread(postgres.start)
        stack.callback(postgres.stop)
        store_url = postgres.url(await postgres.create_database())
        redis_server = RedisServer(folder / "redis", host=SERVICES).start()
        stack.callback(redis_server.stop)
        redis = Redis.from_url(redis_server.url)
        stack.push_async_callback(redis.aclose)
        slack = await FakeSlack(host=SERVICES).start()
        stack.push_async_callback(slack.close)

        nodes = []
        for name, space in zip(("a", "b"), spaces):
            node = Node(name, space, folder / name,
                        node_config(name, space, folder / "shared", store_url, redis_server.url, slack))
            stack.push_async_callback(node.stop)
            nodes.append(node)
        # At once: migrations take a lock, so one node migrates and the other waits.
        await asyncio.gather(*(node.start() for node in nodes))

        cert, key = self_signed(folder, address=edge.address)
        access_log = folder / "nginx" / "access.log"
        site = nginx_site(nodes, cert, key, access_log)
        await stack.enter_async_context(nginx(folder / "nginx", site, HTTPS_PORT, edge.address, edge.prefix))

        playwright = await stack.enter_async_context(async_playwright())
        args = [a for a in CHROMIUM_ARGS if a != "--allow-loopback-in-peer-connection"
                and not a.startswith("--host-resolver-rules")]
        browser = await playwright.chromium.launch(
            executable_path=str(edge.wrapper(CHROMIUM, folder)), headless=True,
            args=[*args, f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {edge.address}"])
        stack.push_async_callback(browser.close)

        made = Cluster(folder, spaces, nodes, redis_server, redis, slack, browser, cert, access_log)
        await made.until_ready()
        try:
            yield made
        except BaseException:
            for node in nodes:  # what each node said, for the failure report
                print(f"--- node {node.name} log ---\n{node.tail()}", file=sys.stderr)
            raise


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)
