"""End-to-end encrypted meetings in Chromium: only key holders see anything; the server cannot."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import av
import pytest
from aiohttp.test_utils import TestClient
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtp import RtpPacket
from playwright.async_api import Browser

from meeting import ids
from meeting.models import Origin
from meeting.service import MeetingService
from meeting.media.transport import PeerTransport
from tests.conftest import wait_for
from tests.web.test_browser_gestures import LOG_REACTIONS, reactions_shown
from tests.web.test_browser_meeting import frames_keep_rising, join_meeting, new_page, remote_media

pytestmark = pytest.mark.browser

VP8 = 97  # the payload type the server offers for VP8


class ServerTap:
    """Records the VP8 frames the server receives, reassembled from RTP, per publisher."""

    def __init__(self) -> None:
        self.packets: dict[str, list[RtpPacket]] = defaultdict(list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = PeerTransport._on_rtp
        tap = self

        async def on_rtp(transport: PeerTransport, data: bytes, *args: Any, **kwargs: Any) -> None:
            who = transport.participant_id
            if len(data) > 12 and data[1] & 0x7F == VP8 and len(tap.packets[who]) < 3000:
                tap.packets[who].append(RtpPacket.parse(data))
            await original(transport, data, *args, **kwargs)

        monkeypatch.setattr(PeerTransport, "_on_rtp", on_rtp)

    def frames(self, participant_id: str) -> list[bytes]:
        """Whole VP8 frames (payload descriptors removed), complete ones only."""
        by_ts: dict[int, dict[int, RtpPacket]] = defaultdict(dict)
        for packet in self.packets[participant_id]:
            by_ts[packet.timestamp][packet.sequence_number] = packet
        frames = []
        for packets in by_ts.values():
            ordered = [packets[s] for s in sorted(packets)]
            seqs = [p.sequence_number for p in ordered]
            if not ordered[-1].marker or seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                continue
            parts = [VpxPayloadDescriptor.parse(p.payload) for p in ordered]
            if not parts[0][0].partition_start:
                continue
            frames.append(b"".join(rest for _, rest in parts))
        return frames


def decodable(frames: list[bytes]) -> int:
    """How many pictures libvpx (through PyAV) makes of these frames."""
    codec = av.CodecContext.create("vp8", "r")
    pictures = 0
    for frame in frames:
        try:
            pictures += len(codec.decode(av.Packet(frame)))
        except av.error.FFmpegError:
            pass
    return pictures


async def test_only_key_holders_see_and_the_server_sees_ciphertext(
    browser: Browser, client: TestClient, meetings: MeetingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = ServerTap()
    tap.install(monkeypatch)
    minted = await meetings.mint("Private", Origin("web"), e2ee=True)
    link = str(client.make_url(f"/m/{minted.meeting.id}"))
    key = ids.new_media_key()
    ann, ben, cat = await new_page(browser), await new_page(browser), await new_page(browser)
    host_key = minted.host_url.split("#host=")[1]
    await join_meeting(ann, f"{link}#host={host_key}&key={key}", "Ann")  # a host
    assert await ann.get_attribute("#more-menu .host-only", "hidden") is None
    await join_meeting(ben, f"{link}#key={key}", "Ben")
    assert "End-to-end encrypted" in await ann.text_content(".badge.secure")

    # Both key holders decode each other's video and hear each other.
    await frames_keep_rising(ann, 1, timeout=15)
    await frames_keep_rising(ben, 1, timeout=15)

    # A third with the link minus its fragment is warned, and decodes no valid frame.
    await cat.goto(link)
    assert "has no key" in await cat.text_content("#e2ee-note")
    await cat.fill("#name", "Cat")
    await cat.click("button:has-text('Join')")
    await cat.wait_for_selector(".tile.self")

    async def cat_receives_packets() -> bool:
        stats = await cat.evaluate("""async () => { let n = 0;
            (await window.meetnow.pc.getStats()).forEach(r => { if (r.type === 'inbound-rtp'
              && r.kind === 'video') n += r.packetsReceived || 0; }); return n; }""")
        return stats > 100
    await wait_for(cat_receives_packets, timeout=10, interval=0.2)
    media = await remote_media(cat)
    holders = await remote_media(ben)
    # libvpx may take the odd ciphertext key frame (its header is in clear) for a garbage
    # picture (more of them on a loaded machine, where keyframes are asked for more often);
    # the key holders decode every frame of the same streams meanwhile.
    held = max(m["frames"] for m in holders.values())  # Ben from Ann (Cat's own media is no use to him)
    assert held > 25, holders
    assert media and all(m["frames"] <= max(2, held // 20) for m in media.values()), (media, holders)

    # What the server forwarded is not what the senders' encoders made: libvpx cannot
    # decode it, while the key holders above decode the same streams.
    await wait_for(lambda: any(len(p) > 300 for p in tap.packets.values()), timeout=10)
    ann_id = next(pid for pid, pkts in tap.packets.items() if len(pkts) > 300)
    frames = tap.frames(ann_id)
    assert len(frames) >= 20
    assert decodable(frames) == 0
    ann_frames = await ann.evaluate("""async () => { let n = 0;
        (await window.meetnow.pc.getStats()).forEach(r => { if (r.type === 'outbound-rtp'
          && r.kind === 'video') n += r.framesEncoded || 0; }); return n; }""")
    assert ann_frames > 20

    # Cat is told plainly why the tiles are empty, and the others (the host too) see whose link
    # lacks the key: from the key check Cat's page sent with its join (it sent none).
    assert "your link has no key" in await cat.text_content("#e2ee-banner")
    assert await cat.eval_on_selector_all(".tile.undecryptable:not(.self)", "els => els.length") == 2
    # Ciphertext decoded as sound is noise: Cat's page plays none, and marks no one speaking.
    assert await cat.eval_on_selector_all(".tile audio", "els => els.length === 2 && els.every(a => !a.srcObject)")
    assert await cat.eval_on_selector_all(".tile.speaking:not(.self)", "els => els.length") == 0
    for holder in (ann, ben):
        note = await holder.wait_for_selector(".tile.undecryptable:has-text('Cat') .tile-note", timeout=10000)
        assert "Cat's link has no key" in await note.text_content()
        assert "no key in their link" in await holder.text_content("#people li:has-text('Cat') .state")
        assert await holder.eval_on_selector_all("#people li.key-problem", "els => els.map(e => e.textContent)") == [
            await holder.text_content("#people li:has-text('Cat')")]  # nobody else's key is in doubt
        assert await holder.is_hidden("#e2ee-banner")  # the key holders' own key is fine
        assert await holder.eval_on_selector_all(".tile.undecryptable", "els => els.length") == 1

    # The chat is encrypted as well: the server relays ciphertext only.
    for page in (ann, ben, cat):
        await page.click("#chat-toggle")
    await ann.fill("#message", "the plan is secret")
    await ann.click("button:has-text('Send')")
    await ben.wait_for_selector("#messages li .text:has-text('the plan is secret')")
    await cat.wait_for_selector("#messages li .text:has-text('cannot read')")

    # Reactions are sealed too: key holders see Ben's heart, Cat's page (no key) shows nothing.
    for page in (ann, cat):
        await page.evaluate(LOG_REACTIONS)
    await ben.click("#react")
    await ben.click("#reactions button[aria-label='React: heart']")
    await ben.fill("#message", "after the heart")
    await ben.click("button:has-text('Send')")
    assert await reactions_shown(ann, 1) == [["Ben", "\u2764\ufe0f"]]
    # Cat handles messages in order: once the next chat line is shown, the reaction was dealt with.
    await cat.wait_for_function("() => document.querySelectorAll('#messages li:not(.system)').length === 2")
    assert await cat.evaluate("() => window.__reactions") == []

    # With a key that is not the meeting's, Cat is told the key is wrong, not shown grey tiles.
    await cat.click("#leave")
    await cat.goto("about:blank")  # a new fragment alone would not load the page again
    await cat.goto(f"{link}#key={ids.new_media_key()}")
    await cat.fill("#name", "Cat")
    await cat.click("button:has-text('Join')")
    banner = await cat.wait_for_selector("#e2ee-banner:not([hidden])", timeout=15000)
    assert "The key in your link is not the one the others here use" in await banner.text_content()
    # The host sees it at once, in the people list and on the tile, and it is not the host's key.
    await ann.wait_for_selector("#people li:has-text('Cat') .state:has-text('a different key from yours')",
                                state="attached", timeout=5000)
    note = await ann.wait_for_selector(".tile.undecryptable:has-text('Cat') .tile-note")
    assert "Cat's link has a different key" in await note.text_content()
    assert await ann.is_hidden("#e2ee-banner")


async def test_the_same_tap_decodes_a_plain_meeting(
    browser: Browser, client: TestClient, meetings: MeetingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control for the test above: unencrypted media through the same tap decodes."""
    tap = ServerTap()
    tap.install(monkeypatch)
    minted = await meetings.mint("Open", Origin("web"))
    link = str(client.make_url(f"/m/{minted.meeting.id}"))
    ann, ben = await new_page(browser), await new_page(browser)
    await join_meeting(ann, link, "Ann")
    await join_meeting(ben, link, "Ben")
    await frames_keep_rising(ben, 1, timeout=15)
    await wait_for(lambda: any(len(p) > 300 for p in tap.packets.values()), timeout=10)
    ann_id = next(pid for pid, pkts in tap.packets.items() if len(pkts) > 300)
    frames = tap.frames(ann_id)
    assert len(frames) >= 20
    assert decodable(frames) >= len(frames) // 2
