"""Synthetic participants: aiortc peers that behave like meetnow's browser page.

Used by the tests and the forwarding benchmark. A :class:`SyntheticParticipant` answers
the server's offers the way the meeting page does (publish m-lines get its tracks,
receive m-lines are received), sends pre-encoded VP8 and Opus in a loop (encoded once,
so sending costs no encoder time), and either decodes what it receives (the proof that
media arrives intact) or only counts packets and frames (cheap, for load).

Media generated here is synthetic noise and tones; nothing is read from or sent to
anywhere but the loopback peer it is connected to.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import random
import socket
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCBundlePolicy

from meeting import internals
from meeting.media.feedback import ReceptionStats
from meeting.media.ice import CandidatePolicy, apply_ice_policy, ice_connections
from meeting.media.rtp import RtpError, parse_rtp, seq_diff

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000


@dataclass(frozen=True)
class EncodedMedia:
    """A loop of pre-encoded frames: VP8 video (keyframe first) and 20 ms Opus packets."""

    video: tuple[bytes, ...]
    video_keyframes: tuple[bool, ...]
    audio: tuple[bytes, ...]
    fps: int
    width: int
    height: int

    @property
    def video_bitrate(self) -> float:
        return sum(map(len, self.video)) * 8 * self.fps / max(1, len(self.video))


_MEDIA_CACHE: dict[tuple, EncodedMedia] = {}


def encoded_media(
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    bitrate: int = 300_000,
    seconds: float = 4.0,
    seed: int = 1,
) -> EncodedMedia:
    """Encode (once per parameter set) a loop of moving noise and a tone.

    Only the first frame of the loop is a keyframe, so keyframes come once per loop
    unless a receiver asks for one (the synthetic publisher restarts the loop then).
    """
    key = (width, height, fps, bitrate, seconds, seed)
    if key not in _MEDIA_CACHE:
        _MEDIA_CACHE[key] = _encode(width, height, fps, bitrate, seconds, seed)
    return _MEDIA_CACHE[key]


def _encode(width: int, height: int, fps: int, bitrate: int, seconds: float, seed: int) -> EncodedMedia:
    rng = random.Random(seed)
    frames = max(2, int(seconds * fps))
    codec = av.CodecContext.create("libvpx", "w")
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuv420p"
    codec.framerate = fractions.Fraction(fps, 1)
    codec.time_base = fractions.Fraction(1, fps)
    codec.bit_rate = bitrate
    codec.gop_size = frames * 10  # no keyframe inside the loop but the first
    # max-intra-rate caps a keyframe at 9 average frames, as WebRTC's own VP8 encoder
    # does at 30 fps (MaxIntraTarget: 0.5 x 600 ms buffer x fps / 10 = 900%); uncapped,
    # the loop's first keyframe is ~25 average frames, a burst no browser sends.
    codec.options = {
        "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1",
        "max-intra-rate": "900",
    }
    # Low-contrast noise scrolling over a gradient: compresses to roughly the bitrate
    # asked for and changes every frame, like a camera picture would.
    luma = width * height
    step = 2 * width + 3
    noise = rng.randbytes(luma + step * frames).translate(bytes(96 + (b & 63) for b in range(256)))
    chroma = bytes([128]) * (luma // 4)
    video: list[bytes] = []
    keyframes: list[bool] = []
    for i in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        frame.planes[0].update(_plane(noise[i * step : i * step + luma], frame.planes[0], width, height))
        frame.planes[1].update(_plane(chroma, frame.planes[1], width // 2, height // 2))
        frame.planes[2].update(_plane(chroma, frame.planes[2], width // 2, height // 2))
        frame.pts = i
        frame.time_base = codec.time_base
        if i == 0:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in codec.encode(frame):
            video.append(bytes(packet))
            keyframes.append(bool(packet.is_keyframe))
    for packet in codec.encode(None):
        video.append(bytes(packet))
        keyframes.append(bool(packet.is_keyframe))

    audio = _encode_opus(int(seconds * 50), rng)
    return EncodedMedia(tuple(video), tuple(keyframes), tuple(audio), fps, width, height)


def _plane(data: bytes, plane: Any, width: int, height: int) -> bytes:
    stride = plane.line_size
    if stride == width:
        return data[: width * height]
    pad = bytes(stride - width)
    return b"".join(data[r * width : (r + 1) * width] + pad for r in range(height))


def _encode_opus(count: int, rng: random.Random) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_CLOCK
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 48000
    packets: list[bytes] = []
    samples = 960
    for i in range(count + 2):
        pcm = array("h")
        for n in range(samples):
            t = (i * samples + n) / AUDIO_CLOCK
            # A little noise on the tone: a pure tone repeats every few packets, and
            # latency is timed by payload, so every packet of the loop must differ.
            v = int(6000 * math.sin(2 * math.pi * 440 * t)) + rng.randint(-300, 300)
            pcm.append(v)
            pcm.append(v)
        frame = av.AudioFrame(format="s16", layout="stereo", samples=samples)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = i * samples
        frame.time_base = fractions.Fraction(1, AUDIO_CLOCK)
        packets.extend(bytes(p) for p in codec.encode(frame))
    return packets[:count]


class EncodedPacket:
    """What aiortc's sender packs without encoding: bytes plus pts and time base."""

    __slots__ = ("data", "pts", "time_base")

    def __init__(self, data: bytes, pts: int, time_base: fractions.Fraction) -> None:
        self.data = data
        self.pts = pts
        self.time_base = time_base

    def __bytes__(self) -> bytes:
        return self.data


class LoopTrack(MediaStreamTrack):
    """Sends a loop of encoded frames in real time; restarts at the keyframe on request."""

    def __init__(self, kind: str, media: EncodedMedia) -> None:
        super().__init__()
        self.kind = kind
        if kind == "video":
            self._frames = media.video
            self._interval = 1.0 / media.fps
            self._pts_step = VIDEO_CLOCK // media.fps
            self._time_base = fractions.Fraction(1, VIDEO_CLOCK)
        else:
            self._frames = media.audio
            self._interval = 0.02
            self._pts_step = 960
            self._time_base = fractions.Fraction(1, AUDIO_CLOCK)
        self._index = 0
        self._count = 0
        self._start: float | None = None
        self.keyframe_requests = 0

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._index = 0

    async def recv(self) -> EncodedPacket:
        if self.readyState != "live":
            raise MediaStreamError
        loop_time = time.monotonic()
        if self._start is None:
            self._start = loop_time
        due = self._start + self._count * self._interval
        if due > loop_time:
            await asyncio.sleep(due - loop_time)
        elif loop_time - due > 1.0:
            # Far behind (a stalled event loop): skip ahead instead of bursting.
            self._start = loop_time - self._count * self._interval
        data = self._frames[self._index]
        packet = EncodedPacket(data, self._count * self._pts_step, self._time_base)
        self._index = (self._index + 1) % len(self._frames)
        self._count += 1
        return packet


class LatencyStamps:
    """Send times of RTP payloads, so a receiver in the same process can time them.

    The server forwards payloads byte for byte, so the payload identifies a packet on
    both sides of it (RTX retransmissions carry a different payload and are ignored).
    """

    def __init__(self, capacity: int = 20000) -> None:
        self.sent: dict[int, float] = {}
        self.capacity = capacity
        self.samples: dict[str, list[float]] = {"audio": [], "video": []}

    def stamp(self, payload: bytes, now: float) -> None:
        if len(self.sent) >= self.capacity:
            self.sent.clear()
        self.sent[hash(payload)] = now

    def observe(self, kind: str, payload: bytes, now: float) -> None:
        sent = self.sent.get(hash(payload))
        if sent is not None:
            self.samples[kind].append(now - sent)


@dataclass
class ReceivedStream:
    """What one participant got for one m-line (by mid)."""

    frames: int = 0
    packets: int = 0
    first_frame: float | None = None
    last_frame: float | None = None
    max_gap: float = 0.0
    # sequence bookkeeping of the media SSRC, for loss (expected vs received)
    sequence: ReceptionStats = field(default_factory=lambda: ReceptionStats(90000))

    def frame(self, now: float) -> None:
        if self.last_frame is not None:
            self.max_gap = max(self.max_gap, now - self.last_frame)
        else:
            self.first_frame = now
        self.last_frame = now
        self.frames += 1

    def reset_gap(self) -> None:
        self.max_gap = 0.0


@dataclass
class _Slot:
    participant: str
    source: str
    kind: str
    direction: str


class SyntheticParticipant:
    """An aiortc peer standing in for a browser on the meeting page.

    ``decode=True`` decodes every received track (frames counted per mid);
    ``decode=False`` counts packets and frames (RTP marker bit) without decoding and
    without any aiortc receiver machinery.
    """

    def __init__(
        self,
        name: str,
        media: EncodedMedia,
        *,
        decode: bool = True,
        announce: tuple[str, ...] = ("127.0.0.1",),
        allowed_networks: tuple[str, ...] = ("127.0.0.0/8",),
        stamps: LatencyStamps | None = None,
        sources: tuple[str, ...] = ("mic", "camera", "screen"),
        receive_buffer: int | None = None,
    ) -> None:
        self.name = name
        self.media = media
        self.decode = decode
        self.stamps = stamps
        # SO_RCVBUF for this peer's UDP sockets: a benchmark gives its synthetic viewers
        # room for bursts, so that what it measures is the server, not the viewers'
        # event loop falling behind.
        self.receive_buffer = receive_buffer
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self._announce = announce
        self._policy = CandidatePolicy.from_config(allowed_networks)
        self.tracks = {s: LoopTrack("audio" if s == "mic" else "video", media) for s in sources}
        self.slots: dict[str, _Slot] = {}
        self.received: dict[str, ReceivedStream] = {}
        self.offers = 0
        self._consumers: dict[str, asyncio.Task] = {}
        self._ssrc_mid: dict[int, str] = {}
        self._media_ssrcs: set[int] = set()
        self._hooked = False
        self._queue: asyncio.Queue = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self.peer: Any = None
        self.errors: list[BaseException] = []
        self.on_answer: Callable[[], None] | None = None

    # --- signaling ---------------------------------------------------------------------

    async def send_offer(self, offer: Any) -> None:
        """The ``send_offer`` callback for ``Sfu.join``: queue the offer, answer it later."""
        self._queue.put_nowait(offer)
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._answer_loop())

    async def _answer_loop(self) -> None:
        while True:
            offer = await self._queue.get()
            if offer is None:
                return
            for _ in range(500):  # the peer is set by the caller once join() returns
                if self.peer is not None:
                    break
                await asyncio.sleep(0.01)
            try:
                answer = await self.answer(offer)
                await self.peer.accept_answer(answer)
            except Exception as exc:  # surfaced by tests through .errors
                if "closed" in (self.pc.signalingState, self.pc.connectionState):
                    return  # closed while an offer was on its way: nothing left to answer
                logger.exception("%s: answering failed", self.name)
                self.errors.append(exc)
            if self.on_answer is not None:
                self.on_answer()

    async def answer(self, offer: Any) -> str:
        """Answer a server offer as the meeting page does; returns the answer SDP."""
        self.offers += 1
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        for connection in ice_connections(self.pc):
            apply_ice_policy(connection, self._announce, self._policy)
        by_mid = {t.mid: t for t in self.pc.getTransceivers()}
        self.slots = {}
        for slot in offer.slots:
            self.slots[slot.mid] = _Slot(slot.participant, slot.source, slot.kind, slot.direction)
            transceiver = by_mid[slot.mid]
            if slot.direction == "publish":
                track = self.tracks.get(slot.source)
                if track is None:
                    transceiver.direction = "inactive"
                    continue
                if transceiver.sender.track is not track:
                    transceiver.sender.replaceTrack(track)
                    self._hook_keyframes(transceiver.sender, track)
                transceiver.direction = "sendonly"
            else:
                transceiver.direction = "recvonly"
                if not self.decode:
                    internals.silence_receiver(transceiver.receiver)
                self.received.setdefault(slot.mid, ReceivedStream())
        for mid, transceiver in by_mid.items():
            if mid not in self.slots and transceiver.direction == "sendonly":
                transceiver.direction = "inactive"
        self._learn_ssrcs(offer.sdp)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self._size_buffers()
        self._hook_transport()
        if self.decode:
            self._start_consumers()
        return self.pc.localDescription.sdp

    async def offer_to_publish(self, sources: tuple[str, ...] = ("mic", "camera")) -> str:
        """Offer ``sources`` send-only, for a server that answers (Janus, a direct peer).

        Returns the offer SDP, candidates included (aiortc does not trickle); give the
        server's answer to :meth:`accept_publish_answer`.
        """
        for source in sources:
            transceiver = self.pc.addTransceiver(self.tracks[source], direction="sendonly")
            self._hook_keyframes(transceiver.sender, self.tracks[source])
        for connection in ice_connections(self.pc):
            apply_ice_policy(connection, self._announce, self._policy)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._size_buffers()
        self._hook_transport()
        return self.pc.localDescription.sdp

    async def accept_publish_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def _size_buffers(self) -> None:
        if not self.receive_buffer:
            return
        for connection in ice_connections(self.pc):
            for sock in internals.ice_sockets(connection):
                for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                    try:  # as root, FORCE may go past net.core.rmem_max
                        sock.setsockopt(socket.SOL_SOCKET, option, self.receive_buffer)
                        break
                    except OSError:  # not root, or a socket closed meanwhile
                        continue

    def _hook_keyframes(self, sender: Any, track: LoopTrack) -> None:
        # aiortc's sender only flags keyframe requests for its encoder; pre-encoded
        # media needs the track told instead.
        internals.hook_keyframe_requests(sender, track.request_keyframe)

    def _learn_ssrcs(self, sdp: str) -> None:
        mid = None
        for line in sdp.splitlines():
            if line.startswith("m="):
                mid = None
            elif line.startswith("a=mid:"):
                mid = line[6:].strip()
            elif line.startswith("a=ssrc:") and mid is not None:
                ssrc = int(line[7:].split()[0])
                if mid not in self._ssrc_mid.values():
                    self._media_ssrcs.add(ssrc)  # the first SSRC of an m-line is the media one
                self._ssrc_mid[ssrc] = mid

    def _hook_transport(self) -> None:
        if self._hooked:
            return
        transceivers = self.pc.getTransceivers()
        if not transceivers:
            return
        dtls = transceivers[0].receiver.transport
        self._hooked = True
        if self.stamps is not None:
            stamps = self.stamps
            original_send = internals.dtls_sender(dtls)

            async def send_rtp(data: bytes) -> None:
                if not (192 <= data[1] <= 223):
                    try:
                        view = parse_rtp(data)
                        stamps.stamp(view.body, time.monotonic())
                    except RtpError:
                        pass
                await original_send(data)

            internals.set_dtls_sender(dtls, send_rtp)
        if not self.decode:
            # Count from the SRTP header, which is cleartext, before anything is
            # decrypted; only a sample (1 packet in 8) is decrypted, to time it.
            def keep(data: bytes) -> bool:
                if len(data) >= 12 and 127 < data[0] < 192 and not 192 <= data[1] <= 223:
                    stream = self._count(data)
                    # marker: the last packet of a frame (counted once, not for repeats)
                    if stream is not None and data[1] & 0x80:
                        stream.frame(time.monotonic())
                    if self.stamps is None or data[3] & 7:
                        return False
                return True

            internals.filter_datagrams(internals.ice_connection(dtls), keep)
            internals.set_dtls_rtp_handler(dtls, self._stamp_rtp)
        elif self.stamps is not None:
            original_handle = internals.dtls_rtp_handler(dtls)

            async def handle_rtp(data: bytes, arrival_time_ms: int) -> None:
                self._count(data)
                await self._stamp_rtp(data)
                await original_handle(data, arrival_time_ms=arrival_time_ms)

            internals.set_dtls_rtp_handler(dtls, handle_rtp)

    def _count(self, data: bytes) -> ReceivedStream | None:
        """Count a packet by its (cleartext) header: per m-line packets and sequence.

        Returns the stream when the packet is new media (not a repeat or an RTX).
        """
        ssrc = int.from_bytes(data[8:12], "big")
        mid = self._ssrc_mid.get(ssrc)
        if mid is None:
            return None
        stream = self.received.get(mid)
        if stream is None:
            return None
        stream.packets += 1
        if ssrc not in self._media_ssrcs:
            return None
        sequence = stream.sequence
        seq = (data[2] << 8) | data[3]
        new = sequence.base_seq is None or seq_diff(seq, sequence.max_seq) > 0
        sequence.add(seq, 0, 0.0, True)
        return stream if new else None

    async def _stamp_rtp(self, data: bytes, arrival_time_ms: int = 0) -> None:
        """Time a decrypted packet against its publisher's send stamp."""
        if self.stamps is None:
            return
        slot = self.slots.get(self._ssrc_mid.get(int.from_bytes(data[8:12], "big"), ""))
        try:
            view = parse_rtp(data)
        except RtpError:
            return
        self.stamps.observe(slot.kind if slot else "video", view.body, time.monotonic())

    def _start_consumers(self) -> None:
        for transceiver in self.pc.getTransceivers():
            mid = transceiver.mid
            slot = self.slots.get(mid)
            if slot is None or slot.direction != "receive" or mid in self._consumers:
                continue
            track = transceiver.receiver.track
            if track is None:
                continue
            self._consumers[mid] = asyncio.ensure_future(self._consume(mid, track))

    async def _consume(self, mid: str, track: MediaStreamTrack) -> None:
        stream = self.received.setdefault(mid, ReceivedStream())
        try:
            while True:
                await track.recv()
                stream.frame(time.monotonic())
        except (MediaStreamError, asyncio.CancelledError):
            pass

    # --- queries -------------------------------------------------------------------------

    def stream_from(self, participant: str, source: str) -> ReceivedStream | None:
        """The stream currently received from ``participant``'s ``source``."""
        for mid, slot in self.slots.items():
            if slot.direction == "receive" and slot.participant == participant and slot.source == source:
                return self.received.get(mid)
        return None

    def frames_from(self, participant: str, source: str) -> int:
        stream = self.stream_from(participant, source)
        return stream.frames if stream else 0

    @property
    def keyframe_requests(self) -> int:
        return sum(t.keyframe_requests for t in self.tracks.values())

    async def close(self) -> None:
        self._queue.put_nowait(None)
        for task in list(self._consumers.values()) + ([self._worker] if self._worker else []):
            task.cancel()
        await asyncio.gather(*self._consumers.values(), return_exceptions=True)
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
        await self.pc.close()


def rtp_payload(data: bytes) -> bytes:
    """The payload (and padding) of an RTP packet, after header and extensions."""
    cc = data[0] & 0x0F
    pos = 12 + 4 * cc
    if data[0] & 0x10:
        words = struct.unpack_from("!H", data, pos + 2)[0]
        pos += 4 + 4 * words
    return data[pos:]
