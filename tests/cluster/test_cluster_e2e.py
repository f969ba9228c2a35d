"""The cluster end to end: two ``meetnow serve`` nodes in network namespaces of their own,
nginx in front (deploy/nginx-cluster.conf), PostgreSQL, Redis and a fake Slack, and two
Chromium participants whose websockets land on different nodes (see tests/cluster/net.py)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Page
from redis.exceptions import RedisError

from bench.fake_slack import command_payload, form, sign
from bot.slack import EVENTS_PATH
from meeting import ids
from meeting.cluster.nodes import PREFIX as NODE_PREFIX
from tests.cluster.net import Cluster, Node, cluster
from tests.conftest import wait_for
from tests.netspace import isolated
from tests.web.test_browser_meeting import join_meeting, remote_media

# One cluster for the module (starting it takes most of the time); each test its own meeting.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

# The address of the media server each page's selected ICE candidate pair goes to.
MEDIA_PEER = """
async () => {
  const pc = window.meetnow.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((r) => { if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
  if (!pair || pair.state !== "succeeded") return null;
  const remote = stats.get(pair.remoteCandidateId);
  return remote ? remote.address : null;
}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def started(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    if not isolated():
        pytest.skip("needs the private network namespace that tests/netns.sh gives root")
    async with cluster(tmp_path_factory.mktemp("cluster")) as made:
        yield made


@pytest_asyncio.fixture(loop_scope="module")
async def running(started: Cluster) -> AsyncIterator[Cluster]:
    """The cluster with every node up (a node killed by an earlier test is started again);
    the test's browser pages are closed after it."""
    await started.restart_dead()
    await started.until(started.idle, 15, "every node idle before the test")
    yield started
    for context in started.browser.contexts:
        await context.close()


def status_text(update: dict[str, Any]) -> str:
    """The live status line of a Slack meeting message."""
    return update["blocks"][1]["elements"][0]["text"]


@dataclass
class Minted:
    url: str  # the link posted in the channel
    post: dict[str, Any]  # the chat.postMessage that carried it
    host_key: str  # from the asker's private answer

    @property
    def meeting_id(self) -> str:
        return self.url.rsplit("/m/", 1)[1]


async def mint_in_slack(cl: Cluster, title: str, via: str = "") -> Minted:
    """/meetnow <title> sent to the cluster's URL (any node answers) or straight to the node
    at ``via``."""
    body = form(command_payload(title, response_url=cl.slack.response_url()))
    async with aiohttp.ClientSession() as http:
        async with http.post((via or cl.url) + EVENTS_PATH, data=body, headers=sign(body),
                             ssl=None if via else cl.trust()) as response:
            assert response.status == 200, await response.text()
            answer = (await response.json())["text"]
    host_key = re.search(r"#host=([A-Za-z0-9_-]+)", answer)
    assert host_key, answer  # the asker's private host link

    def posted() -> list[dict[str, Any]]:
        return [p for p in cl.slack.done("chat.postMessage") if title in p["text"]]
    await wait_for(posted, timeout=10, interval=0.1)
    [post] = posted()  # posted once, whichever node took the command
    [url] = set(re.findall(r"https?://[^\s<>|]+/m/[A-Za-z0-9_-]+", post["text"]))
    return Minted(url, post, host_key[1])


async def participant(cl: Cluster, url: str, name: str) -> Page:
    context = await cl.browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    await join_meeting(page, url, name)
    return page


async def media_from_other(page: Page) -> tuple[float, float]:
    """(video frames decoded, audio energy received) from the one other participant."""
    media = await remote_media(page)
    if len(media) != 1:
        return 0, 0.0
    [other] = media.values()
    return other["frames"], other["energy"]


async def media_both_ways(pages: list[Page], server: Node) -> bool:
    """Each page decodes the other's video and hears its audio, from ``server``'s address."""
    for page in pages:
        frames, energy = await media_from_other(page)
        if frames <= 0 or energy <= 0 or await page.evaluate(MEDIA_PEER) != server.address:
            return False
    return True


async def frames_rising(pages: list[Page], timeout: float = 5.0) -> None:
    before = [(await media_from_other(p))[0] for p in pages]

    async def rising() -> bool:
        now = [(await media_from_other(p))[0] for p in pages]
        return all(n > b + 5 for n, b in zip(now, before))
    await wait_for(rising, timeout=timeout, interval=0.1)


async def meeting_on_two_nodes(cl: Cluster, url: str) -> tuple[list[Page], Node, Node]:
    """Ann and Ben in the meeting at ``url``, their sockets on different nodes, media both
    ways with the hosting node; returns the pages, the host and the other node."""
    ann = await participant(cl, url, "Ann")
    ben = await participant(cl, url, "Ben")
    meeting_id = url.rsplit("/m/", 1)[1]
    host = await cl.host_of(meeting_id)
    assert host is not None
    other = next(n for n in cl.nodes if n is not host)
    # One socket is the host's own, the other came in on the other node and is relayed.
    async def relayed() -> bool:
        there, here = await other.metrics(), await host.metrics()
        return there.get("meetnow_cluster_relayed_out") == 1 and here.get("meetnow_cluster_relayed_in") == 1
    await cl.until(relayed, 10, "one socket relayed from the other node to the host")
    assert (await host.metrics())["meetnow_participants"] == 2
    assert (await other.metrics())["meetnow_participants"] == 0
    # Media goes straight to the hosting node's own address, never through the other.
    await cl.until(lambda: media_both_ways([ann, ben], host), 15, "media both ways with the host")
    await frames_rising([ann, ben])
    return [ann, ben], host, other


async def test_two_browsers_on_two_nodes_meet_and_slack_is_told_once(running: Cluster) -> None:
    cl = running
    minted = await mint_in_slack(cl, "Across the cluster")
    url, post, meeting_id = minted.url, minted.post, minted.meeting_id

    def edits() -> list[str]:
        return [status_text(u) for u in cl.slack.done("chat.update") if meeting_id in json.dumps(u)]
    assert url.startswith(cl.url + "/m/")
    (ann, ben), host, other = await meeting_on_two_nodes(cl, url)
    await wait_for(lambda: "In the meeting: Ann, Ben" in edits(), timeout=10, interval=0.1)

    await ann.click("#leave")
    async def ann_gone() -> bool:
        return (await host.metrics())["meetnow_participants"] == 1
    await cl.until(ann_gone, 10, "Ann gone from the host")
    await ben.click("#leave")

    await wait_for(lambda: any(s.startswith("Ended") for s in edits()), timeout=15, interval=0.1)
    shown = edits()
    # In order, each once (two joins or two leaves inside one coalescing window make one
    # edit), and ended once: whichever node delivered each edit.
    order = ["In the meeting: Ann", "In the meeting: Ann, Ben", "In the meeting: Ben", shown[-1]]
    assert shown[-1].startswith("Ended") and sum(s.startswith("Ended") for s in shown) == 1
    assert "In the meeting: Ann, Ben" in shown
    assert shown == [s for s in order if s in shown], shown
    assert [p for p in cl.slack.done("chat.postMessage") if meeting_id in json.dumps(p)] == [post]

    # nginx's log (written as each socket closes): the two sockets went to different nodes.
    socket_path = f"/m/{meeting_id}/ws"
    await wait_for(lambda: len(cl.upstreams(socket_path)) == 2, timeout=10, interval=0.2)
    assert sorted(cl.upstreams(socket_path)) == sorted(f"{n.address}:8080" for n in cl.nodes)


async def test_the_slack_endpoint_answers_on_every_node(running: Cluster) -> None:
    for node in running.nodes:
        minted = await mint_in_slack(running, f"Asked of node {node.name}", via=f"http://{node.address}:8080")
        assert minted.url.startswith(running.url + "/m/")  # the cluster's one public URL


async def test_a_recording_is_captured_on_the_host_composed_once_and_served_by_every_node(
        running: Cluster) -> None:
    cl = running
    minted = await mint_in_slack(cl, "Recorded across")
    pages, host, other = await meeting_on_two_nodes(cl, minted.url)

    async def act(action: str) -> dict[str, Any]:
        """Start or stop, asked of the node that does not host the meeting (relayed to it)."""
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://{other.address}:8080/api/meetings/{minted.meeting_id}/recording",
                                 json={"action": action},
                                 headers={"Authorization": f"Bearer {minted.host_key}"}) as response:
                assert response.status == 200, await response.text()
                return await response.json()

    started = await act("start")
    assert started["active"] is True and started["url"].startswith(cl.url + "/r/")
    recording_id = started["url"].rsplit("/r/", 1)[1]

    async def recording_on_host() -> bool:
        return (await host.metrics()).get("meetnow_recordings_active") == 1
    await cl.until(recording_on_host, 10, "recording on the hosting node")
    assert (await other.metrics()).get("meetnow_recordings_active") == 0
    # The tracks go to the shared folder, as they arrive.
    tracks = cl.recordings / recording_id
    await wait_for(lambda: sum(f.stat().st_size for f in tracks.rglob("*") if f.is_file()) > 100_000,
                   timeout=20, interval=0.2)
    assert (await act("stop"))["active"] is False

    async def served_by_every_node() -> bool:
        async with aiohttp.ClientSession() as http:
            for node in cl.nodes:
                async with http.get(f"http://{node.address}:8080/r/{recording_id}/video",
                                    headers={"Range": "bytes=0-99"}) as response:
                    if response.status != 206 or (await response.read())[4:8] != b"ftyp":
                        return False
        return True
    await cl.until(served_by_every_node, 90, "the composed recording served by every node")
    composed_by = [n.name for n in cl.nodes if f"recording ready recording={ids.short(recording_id)}" in n.log.read_text()]
    assert len(composed_by) == 1, composed_by
    # Its link goes to the meeting's Slack thread once, whichever node composed it.
    def announced() -> list[dict[str, Any]]:
        return [p for p in cl.slack.done("chat.postMessage") if recording_id in json.dumps(p)]
    await wait_for(announced, timeout=15, interval=0.2)
    [reply] = announced()
    assert reply.get("thread_ts")


async def test_redis_restarted_mid_meeting_the_meeting_goes_on_and_the_directory_heals(running: Cluster) -> None:
    cl = running
    minted = await mint_in_slack(cl, "Survives Redis")
    url, meeting_id = minted.url, minted.meeting_id
    pages, host, other = await meeting_on_two_nodes(cl, url)
    await pages[0].evaluate("() => { window.connectionBefore = window.meetnow.pc; }")
    await pages[1].evaluate("() => { window.connectionBefore = window.meetnow.pc; }")

    await cl.redis_server.restart()
    restarted = time.monotonic()
    frames = [(await media_from_other(p))[0] for p in pages]
    healed: float | None = None
    # Watch for the heal (10 s at most) and a few seconds beyond: frames rise every second.
    while time.monotonic() - restarted < (healed or 10.0) + 3.0:
        await asyncio.sleep(1.0)  # the watch's sampling interval (not a wait for a condition)
        now = [(await media_from_other(p))[0] for p in pages]
        assert all(n > f for n, f in zip(now, frames)), (frames, now)
        frames = now
        if healed is None:
            try:
                nodes_back = [k async for k in cl.redis.scan_iter(match=NODE_PREFIX + "*")]
                if len(nodes_back) == 2 and await cl.host_of(meeting_id) is host:
                    healed = time.monotonic() - restarted
            except RedisError:
                pass  # the test's own client reconnects on its next command
        assert healed is not None or time.monotonic() - restarted < 10.0, "the directory did not heal in 10 s"
    # Nobody reconnected: the same peer connections carried the media all along.
    for page in pages:
        assert await page.evaluate("() => window.meetnow.pc === window.connectionBefore")
    # Signaling relayed between the nodes works again: a chat message crosses over.
    await pages[1].click("#chat-toggle")
    await pages[1].fill("#message", "still here")
    await pages[1].click("#send")
    await pages[0].click("#chat-toggle")
    await pages[0].wait_for_selector("#messages :text('still here')", timeout=10_000)
    print(f"directory healed {healed:.1f} s after the Redis restart")


async def test_the_hosting_node_killed_the_meeting_comes_back_on_the_other(running: Cluster) -> None:
    cl = running
    minted = await mint_in_slack(cl, "Survives a node")
    url, meeting_id = minted.url, minted.meeting_id
    pages, host, survivor = await meeting_on_two_nodes(cl, url)

    await host.kill()
    killed = time.monotonic()

    async def back() -> bool:
        return await cl.host_of(meeting_id) is survivor and await media_both_ways(pages, survivor)
    await cl.until(back, 15, "the meeting back on the other node with media")
    took = time.monotonic() - killed
    await frames_rising(pages)
    assert (await survivor.metrics())["meetnow_participants"] == 2
    print(f"back with media on the other node {took:.1f} s after kill -9")
