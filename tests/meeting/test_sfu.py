"""The SFU end to end, with aiortc peers standing in for browsers on loopback.

Frames decoding on the receiving participant is the proof that media crossed the server
intact; the server itself never decodes (see test_no_video_decoder_on_the_server).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import aiortc.rtcrtpreceiver
import pytest

from meeting.config import MediaConfig
from meeting.media.forwarder import START_BITRATE
from meeting.media.rtcp import iter_rtcp, unpack_sender_info
from meeting import internals
from meeting.media.offer import CandidateError, Offer, SdpError
from tests.meeting.waiting import wait_for

VIDEO_FRAMES = 15  # half a second of video
AUDIO_FRAMES = 25


def flowing(viewer, publisher: str, video: int = VIDEO_FRAMES, audio: int = AUDIO_FRAMES):
    return lambda: viewer.frames_from(publisher, "camera") >= video and viewer.frames_from(publisher, "mic") >= audio


async def test_two_participants_receive_each_others_audio_and_video(meeting):
    alice = await meeting.join("alice")
    bob = await meeting.join("bob")
    await wait_for(flowing(alice, "bob"), 8, "alice to get bob")
    await wait_for(flowing(bob, "alice"), 8, "bob to get alice")
    assert alice.peer.connection_state == "connected"
    assert not alice.errors and not bob.errors
    totals = meeting.sfu.stats()["totals"]
    assert totals["packets_forwarded"] > 0
    assert totals["packets_dropped_by_hook"] == 0


async def test_three_participants_receive_everyone(meeting):
    people = [await meeting.join(name) for name in ("alice", "bob", "carol")]
    for viewer in people:
        for publisher in people:
            if publisher is not viewer:
                await wait_for(flowing(viewer, publisher.name), 10, f"{viewer.name} to get {publisher.name}")
    room = meeting.sfu.stats()["rooms"]["room"]
    assert room["participants"] == 3
    assert room["publications"] == 6
    assert room["viewer_streams"] == 12


async def test_offer_announces_only_the_configured_address(meeting):
    alice = await meeting.join("alice")
    await wait_for(lambda: alice.pc.remoteDescription is not None, 5, "the first offer")
    candidates = re.findall(r"a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ (\S+)", alice.pc.remoteDescription.sdp)
    assert candidates and {c[0] for c in candidates} == {"127.0.0.1"}
    assert {c[1] for c in candidates} == {"host"}


async def test_late_joiner_gets_video_quickly_by_asking_the_publisher(meeting):
    alice = await meeting.join("alice")
    bob = await meeting.join("bob")
    await wait_for(flowing(bob, "alice"), 8, "bob to get alice")
    requests_before = alice.tracks["camera"].keyframe_requests
    started = time.monotonic()
    carol = await meeting.join("carol")
    await wait_for(lambda: carol.frames_from("alice", "camera") >= 1, 5, "carol's first frame of alice")
    elapsed = time.monotonic() - started
    # alice's loop has a keyframe every 4 s only: a quick first frame needs the PLI.
    assert alice.tracks["camera"].keyframe_requests > requests_before
    # A VP8 decoder outputs nothing before a keyframe: the first frame proves one came.
    assert elapsed < 2.0


async def test_leaving_renegotiates_the_others_without_breaking_their_streams(meeting):
    alice = await meeting.join("alice")
    bob = await meeting.join("bob")
    carol = await meeting.join("carol")
    await wait_for(flowing(alice, "bob") , 10, "alice to get bob")
    await wait_for(flowing(bob, "alice"), 10, "bob to get alice")
    await wait_for(flowing(alice, "carol"), 10, "alice to get carol")

    server_alice = meeting.sfu.room("room").peer("alice")
    streams = {line.mid: line.stream for line in server_alice._lines if line.stream is not None}
    ssrcs_before = {mid: s.ssrc for mid, s in streams.items()}
    from_bob = alice.stream_from("bob", "camera")
    offers_before = alice.offers
    from_bob.reset_gap()
    frames_before = from_bob.frames

    await meeting.leave("carol")
    await wait_for(lambda: alice.offers > offers_before, 5, "alice's new offer")
    await wait_for(lambda: not any(s.participant == "carol" for s in alice.slots.values()), 5, "carol's slots to go")
    await wait_for(lambda: from_bob.frames >= frames_before + 30, 5, "bob's video to keep coming")
    assert from_bob.max_gap < 0.5
    assert alice.stream_from("bob", "camera") is from_bob  # same m-line
    assert {mid: s.ssrc for mid, s in streams.items()} == ssrcs_before
    # carol's m-lines at alice went inactive and feed nothing
    for line in server_alice._lines:
        if line.key is None and line.stream is not None:
            assert line.stream.publication is None
    assert meeting.sfu.stats()["rooms"]["room"]["viewer_streams"] == 4


async def test_join_after_leave_reuses_inactive_m_lines(meeting):
    alice = await meeting.join("alice")
    await meeting.join("bob")
    await meeting.join("carol")
    await wait_for(flowing(alice, "carol"), 10, "alice to get carol")
    mids_before = set(alice.pc.remoteDescription.sdp.count("m=") for _ in [0])
    await meeting.leave("carol")
    await wait_for(lambda: not any(s.participant == "carol" for s in alice.slots.values()), 5, "carol's slots to go")
    await meeting.join("dave")
    await wait_for(flowing(alice, "dave"), 10, "alice to get dave")
    # dave took carol's m-lines: the SDP did not grow
    assert {alice.pc.remoteDescription.sdp.count("m=")} == mids_before


async def test_publish_and_unpublish_screen(meeting):
    alice = await meeting.join("alice")
    bob = await meeting.join("bob")
    await wait_for(flowing(bob, "alice"), 8, "bob to get alice")
    await alice.peer.publish("screen")
    await wait_for(lambda: bob.frames_from("alice", "screen") >= 10, 8, "bob to get alice's screen")
    screen_mid = next(m for m, s in bob.slots.items() if s.source == "screen")
    await alice.peer.unpublish("screen")
    await wait_for(lambda: not any(s.source == "screen" for s in bob.slots.values()), 5, "the screen slot to go")
    camera = bob.stream_from("alice", "camera")
    frames = camera.frames
    await wait_for(lambda: camera.frames >= frames + 15, 5, "the camera to keep coming")
    await alice.peer.publish("screen")
    await wait_for(lambda: bob.frames_from("alice", "screen") >= 5, 8, "bob to get the screen again")
    assert next(m for m, s in bob.slots.items() if s.source == "screen") == screen_mid


async def test_video_keeps_decoding_with_two_percent_receive_loss(meeting_factory):
    meeting = meeting_factory(receive_loss=0.02, seed=7)
    alice = await meeting.join("alice")
    bob = await meeting.join("bob")
    await wait_for(lambda: bob.frames_from("alice", "camera") >= 5, 8, "bob's first frames")
    stream = bob.stream_from("alice", "camera")
    stream.reset_gap()
    start = stream.frames
    await wait_for(lambda: stream.frames >= start + 100, 10, "100 more frames")
    assert stream.max_gap < 1.0
    totals = meeting.sfu.stats()["totals"]
    assert totals["packets_dropped_by_hook"] > 0
    assert totals["nacks_sent"] > 0
    assert totals["rtx_received"] > 0
    assert not alice.errors and not bob.errors


async def test_viewer_nacks_are_answered_from_history(meeting):
    alice = await meeting.join("alice")
    bob = await meeting.join("bob")
    await wait_for(flowing(bob, "alice"), 8, "bob to get alice")
    # Drop every 15th video packet on bob's side of the wire: bob's receiver NACKs them.
    dtls = bob.pc.getTransceivers()[0].receiver.transport
    original = dtls._handle_rtp_data
    camera_mid = next(m for m, s in bob.slots.items() if s.participant == "alice" and s.source == "camera")
    camera_ssrcs = {ssrc for ssrc, mid in bob._ssrc_mid.items() if mid == camera_mid}
    count = 0

    async def lossy(data: bytes, arrival_time_ms: int) -> None:
        nonlocal count
        if int.from_bytes(data[8:12], "big") in camera_ssrcs and data[1] & 0x7F == 97:
            count += 1
            if count % 15 == 0:
                return
        await original(data, arrival_time_ms=arrival_time_ms)

    dtls._handle_rtp_data = lossy
    stream = bob.stream_from("alice", "camera")
    stream.reset_gap()
    start = stream.frames
    await wait_for(lambda: meeting.sfu.stats()["totals"]["packets_retransmitted"] >= 5, 8, "retransmissions")
    await wait_for(lambda: stream.frames >= start + 60, 8, "60 more frames")
    assert stream.max_gap < 0.5
    assert meeting.sfu.stats()["totals"]["nacks_received"] >= 5


async def test_no_video_decoder_on_the_server(meeting, monkeypatch):
    calls = []
    real = aiortc.rtcrtpreceiver.get_decoder

    def spy(codec):
        calls.append(codec)
        return real(codec)

    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", spy)
    # Participants that count packets without decoding: any decoder would be the server's.
    alice = await meeting.join("alice", decode=False)
    bob = await meeting.join("bob", decode=False)
    await wait_for(lambda: alice.frames_from("bob", "camera") >= 30 and bob.frames_from("alice", "camera") >= 30, 8, "video")
    assert meeting.sfu.stats()["totals"]["packets_forwarded"] > 100
    assert calls == []
    assert not [t.name for t in threading.enumerate() if t.name.endswith("-decoder")]
    for name in ("alice", "bob"):
        for transceiver in meeting.sfu.room("room").peer(name).transceivers():
            assert transceiver.receiver._RTCRtpReceiver__decoder_thread is None
            assert transceiver.receiver.track is None or transceiver.receiver.track._queue.qsize() == 0


async def test_sender_reports_carry_the_publishers_clock_in_the_viewers_timestamps(meeting):
    alice = await meeting.join("alice")
    bob = await meeting.join("bob")
    await wait_for(flowing(bob, "alice"), 8, "bob to get alice")
    dtls = bob.pc.getTransceivers()[0].receiver.transport
    reports: dict[int, tuple[int, int, float]] = {}
    latest: dict[int, tuple[int, float]] = {}
    original_rtcp = dtls._handle_rtcp_data
    original_rtp = dtls._handle_rtp_data

    async def rtcp(data: bytes) -> None:
        for packet_type, _, payload in iter_rtcp(data):
            if packet_type == 200:
                ssrc, ntp, rtp_ts = unpack_sender_info(payload)
                reports[ssrc] = (ntp, rtp_ts, time.time())
        await original_rtcp(data)

    async def rtp(data: bytes, arrival_time_ms: int) -> None:
        latest[int.from_bytes(data[8:12], "big")] = (int.from_bytes(data[4:8], "big"), time.time())
        await original_rtp(data, arrival_time_ms=arrival_time_ms)

    dtls._handle_rtcp_data = rtcp
    dtls._handle_rtp_data = rtp
    media_ssrcs = {
        kind: next(
            ssrc
            for ssrc, mid in bob._ssrc_mid.items()
            if bob.slots.get(mid) and bob.slots[mid].participant == "alice" and bob.slots[mid].kind == kind
        )
        for kind in ("audio", "video")
    }
    await wait_for(lambda: all(s in reports and s in latest for s in media_ssrcs.values()), 6, "sender reports")
    server_alice = meeting.sfu.room("room").peer("alice")
    for kind, ssrc in media_ssrcs.items():
        clock = 48000 if kind == "audio" else 90000
        ntp, sr_rtp, _ = reports[ssrc]
        rtp_ts, seen = latest[ssrc]
        # The publisher (same machine) stamps NTP from the wall clock: a packet's RTP
        # time mapped through the SR must land near the wall time it was sent.
        ntp_seconds = (ntp >> 32) - 2208988800 + (ntp & 0xFFFFFFFF) / 2**32
        mapped = ntp_seconds + ((rtp_ts - sr_rtp + 2**31) % 2**32 - 2**31) / clock
        assert abs(mapped - seen) < 0.15, (kind, mapped - seen)
    assert server_alice is not None


async def test_malformed_answers_raise_and_change_nothing(meeting, media):
    offers: list[Offer] = []

    async def keep(offer: Offer) -> None:
        offers.append(offer)

    from bench.synthetic import SyntheticParticipant

    person = SyntheticParticipant("alice", media)
    peer = await meeting.sfu.open("room").join("alice", keep)
    assert len(offers) == 1
    good = await person.answer(offers[0])
    bad_answers = [
        "",
        "garbage",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",  # no m-lines
        good.replace("a=mid:1", "a=mid:7"),  # mids do not match
        good.replace("a=setup:active", "a=setup:actpass"),  # not an answer's DTLS role
        re.sub(r"a=rtpmap:97 VP8/90000", "a=rtpmap:97 H265/90000", good),  # no common codec
        re.sub(r"a=ice-ufrag:\S+", "", good),
        good.replace("a=rtcp-mux\r\n", ""),
    ]
    for bad in bad_answers:
        with pytest.raises(SdpError):
            await peer.accept_answer(bad)
    assert peer.connection_state == "new"
    assert peer.signaling_state == "have-local-offer"
    await peer.accept_answer(good)
    with pytest.raises(SdpError):
        await peer.accept_answer(good)  # no offer outstanding any more
    await wait_for(lambda: peer.connection_state == "connected", 5, "connection")
    await person.close()


async def test_malformed_candidates_raise_and_change_nothing(meeting):
    alice = await meeting.join("alice")
    await wait_for(lambda: alice.peer.connection_state == "connected", 5, "connection")
    connection = internals.ice_connection(alice.peer.transport.dtls)
    before = list(connection.remote_candidates)
    for candidate, mid, index in [
        ("nonsense", "0", 0),
        ("candidate:1 1 udp notanumber 127.0.0.1 5000 typ host", "0", 0),
        ("candidate:1 1 udp 100 127.0.0.1 99999 typ host", "0", 0),
        ("candidate:1 1 udp 100 127.0.0.1 5000 type host", "0", 0),
        ("candidate:1 1 udp 100 127.0.0.1 5000 typ bogus", "0", 0),
        ("candidate:1 1 udp 100 127.0.0.1 5000 typ host", None, None),
        ("candidate:1 1 udp 100 127.0.0.1 5000 typ host", "0", -1),
    ]:
        with pytest.raises(CandidateError):
            await alice.peer.add_candidate(candidate, mid, index)
    assert [c.host for c in connection.remote_candidates] == [c.host for c in before]


async def test_disallowed_and_mdns_candidates_are_ignored(meeting, media):
    offers: list[Offer] = []

    async def keep(offer: Offer) -> None:
        offers.append(offer)

    from bench.synthetic import SyntheticParticipant

    person = SyntheticParticipant("alice", media)
    peer = await meeting.sfu.open("room").join("alice", keep)
    answer = await person.answer(offers[0])
    # Candidates in the answer from outside 127.0.0.0/8 or as mDNS names are dropped too.
    extra = (
        "a=candidate:9 1 udp 2122260223 3f2b6c1e-1111-2222-3333-444455556666.local 50000 typ host\r\n"
        "a=candidate:8 1 udp 2122260223 192.0.2.10 50001 typ host\r\n"
    )
    answer = answer.replace("a=end-of-candidates\r\n", "", 1)
    answer = re.sub(r"(a=candidate:[^\r\n]+\r\n)", lambda m: m.group(1) + extra, answer, count=1)
    await peer.accept_answer(answer)
    connection = internals.ice_connection(peer.transport.dtls)
    for candidate in (
        "candidate:1 1 udp 2122260223 0b9a2c4d-aaaa-bbbb-cccc-ddddeeeeffff.local 50002 typ host",
        "candidate:2 1 udp 2122260223 192.0.2.11 50003 typ host",
        "candidate:3 1 udp 1686052607 198.51.100.7 50004 typ srflx raddr 0.0.0.0 rport 0",
        "candidate:4 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
    ):
        await peer.add_candidate(candidate, "0", 0)
    await wait_for(lambda: peer.connection_state == "connected", 5, "connection over loopback")
    hosts = {c.host for c in connection.remote_candidates}
    assert hosts and all(h.startswith("127.") for h in hosts), hosts
    assert peer.candidates_ignored >= 6
    await person.close()


async def test_offers_are_serialized_and_changes_coalesced(meeting, media):
    from bench.synthetic import SyntheticParticipant

    offers: list[Offer] = []

    async def keep(offer: Offer) -> None:
        offers.append(offer)

    person = SyntheticParticipant("alice", media)
    peer = await meeting.sfu.open("room").join("alice", keep)
    # While alice's first offer is unanswered, two others join: no offer is sent to her...
    await meeting.join("bob")
    await meeting.join("carol")
    await asyncio.sleep(0)  # let any (wrong) background offer task run
    assert len(offers) == 1
    await peer.accept_answer(await person.answer(offers[0]))
    # ...and once she answers, a single follow-up offer covers both.
    await wait_for(lambda: len(offers) == 2, 5, "the follow-up offer")
    receive = {(s.participant, s.source) for s in offers[1].slots if s.direction == "receive"}
    assert receive == {("bob", "mic"), ("bob", "camera"), ("carol", "mic"), ("carol", "camera")}
    await peer.accept_answer(await person.answer(offers[1]))
    await wait_for(lambda: person.frames_from("carol", "camera") >= 5, 8, "alice to get carol")
    assert len(offers) == 2
    await person.close()


async def test_leave_is_idempotent_and_close_closes_everyone(meeting):
    states: list[str] = []
    alice = await meeting.join("alice")
    await meeting.join("bob")
    await wait_for(lambda: alice.peer.connection_state == "connected", 5, "connection")
    room = meeting.sfu.room("room")
    await room.leave("nobody")
    await room.leave("bob")
    await room.leave("bob")
    assert meeting.sfu.stats()["rooms"]["room"]["participants"] == 1
    peer = alice.peer
    peer._on_state = states.append
    await meeting.sfu.close()
    assert peer.connection_state == "closed"
    assert states[-1:] == ["closed"]
    assert meeting.sfu.stats()["rooms"] == {}


async def test_server_with_default_config_uses_no_ice_servers(media):
    from meeting.media.sfu import Sfu

    sfu = Sfu(MediaConfig(announce_addresses=("127.0.0.1",)))
    offers = []

    async def keep(offer):
        offers.append(offer)

    peer = await sfu.open("r").join("p", keep)
    connection = internals.ice_connection(peer.transport.dtls)
    assert connection.stun_server is None and connection.turn_server is None
    await sfu.close()


async def test_a_viewer_only_participant_does_not_renegotiate_the_others(meeting):
    alice = await meeting.join("alice")
    await wait_for(lambda: alice.peer.connection_state == "connected", 5, "alice connected")
    bob = await meeting.join("bob", publish=())
    await wait_for(flowing(bob, "alice"), 8, "bob to get alice")
    assert alice.offers == 1  # alice's m-lines did not change: no offer
    assert not [s for s in bob.slots.values() if s.direction == "publish"]
    await meeting.leave("bob")
    assert alice.offers == 1


async def test_republishing_before_the_next_offer_keeps_streams_on_their_m_lines(meeting):
    alice = await meeting.join("alice")
    bob = await meeting.join("bob")
    await wait_for(flowing(bob, "alice"), 8, "bob to get alice")
    camera = bob.stream_from("alice", "camera")
    offers = bob.offers
    await alice.peer.unpublish("camera")
    await alice.peer.publish("camera")  # the same source back before anyone renegotiated
    frames = camera.frames
    await wait_for(lambda: camera.frames >= frames + 20, 8, "the camera to come back")
    assert bob.stream_from("alice", "camera") is camera
    assert bob.offers == offers


async def test_receive_backlog_is_bounded(meeting):
    from meeting.media.transport import MAX_BACKLOG

    alice = await meeting.join("alice")

    class FakeConnection:
        def __init__(self) -> None:
            self._queue: asyncio.Queue = asyncio.Queue()

        def data_received(self, data: bytes, component: int) -> None:
            self._queue.put_nowait((data, component))

    fake = FakeConnection()
    room = meeting.sfu.room("room")
    internals.bound_backlog(fake, MAX_BACKLOG, lambda: setattr(room, "overload_drops", room.overload_drops + 1))
    for _ in range(MAX_BACKLOG + 25):
        fake.data_received(b"\x80" * 20, 1)
    assert fake._queue.qsize() == MAX_BACKLOG
    assert meeting.sfu.stats()["rooms"]["room"]["packets_dropped_overload"] == 25
    # the real connection's media is taken at once once connected; the rest is bounded
    await wait_for(lambda: alice.peer.transport.connected, 10, "alice's transport to connect")
    wrapped = internals.ice_connection(alice.peer.transport.dtls).data_received
    assert wrapped.__qualname__.startswith("receive_now")
    assert wrapped.__closure__ is not None and any(
        getattr(cell.cell_contents, "__qualname__", "").startswith("bound_backlog") for cell in wrapped.__closure__)


async def test_viewers_bandwidth_reports_reach_their_adaptation_and_publishers_hear_of_it(meeting):
    alice = await meeting.join("alice")
    bob = await meeting.join("bob")
    await wait_for(flowing(bob, "alice"), 8, "bob to get alice")
    adaptation = bob.peer.transport.adaptation
    # aiortc's receivers send REMB (abs-send-time is stamped by the server) and receiver
    # reports that echo the server's sender reports.
    await wait_for(lambda: adaptation.controller.remb is not None, 8, "bob's REMB")
    await wait_for(lambda: adaptation.controller.rtt is not None, 8, "bob's round trip")
    assert 0 <= adaptation.controller.rtt < 1.0
    await wait_for(lambda: ("alice", "camera") in adaptation.demands, 5, "bob's demand of alice's camera")
    camera = alice.peer.publications["camera"]
    await wait_for(lambda: camera.upstream_bitrate != START_BITRATE, 5, "alice's REMB to follow her viewer")
    assert camera.upstream_bitrate >= adaptation.demands[("alice", "camera")]
    assert not adaptation.paused


async def test_a_peer_connection_closed_by_aiortc_makes_no_offer_and_no_traceback(meeting, caplog):
    alice = await meeting.join("alice")
    await meeting.join("bob")
    await wait_for(lambda: alice.peer.connection_state == "connected", 5, "connection")
    offers = alice.offers
    # aiortc closes a connection by itself when ICE consent expires, before the session hears of it.
    await alice.peer._pc.close()
    await meeting.sfu.room("room").leave("bob")  # the room changes: alice's peer would offer again
    await asyncio.sleep(0.2)
    assert alice.offers == offers
    assert "could not make an offer" not in caplog.text
