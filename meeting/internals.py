"""Every use of another library's private names, in one place.

meetnow forwards RTP below aiortc's media pipeline, which aiortc has no public API for
(see ../README.md, "Media"). The handful of private aiortc and aioice attributes this needs
are read and replaced here and nowhere else, so a newer aiortc breaks exactly one module,
and :func:`shape_problems` (run by the test suite) names what moved. aiortc is pinned in
pyproject.toml for the same reason. The one private name of the standard library's process
pool the recording composer needs is here too, checked by :func:`pool_shape_problems`.
The benchmarks' synthetic participants (bench/synthetic.py) send pre-encoded media and
count packets below aiortc too; their hooks are at the end.
"""

from __future__ import annotations

import inspect
import multiprocessing.process
from concurrent.futures import ProcessPoolExecutor
import socket
from typing import Any, Awaitable, Callable

from aiortc import RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcicetransport import RTCIceGatherer

RtpHandler = Callable[..., Awaitable[None]]


async def _inert(*args: Any, **kwargs: Any) -> None:
    """Stands in for aiortc's media start-up where packets are moved or counted without it."""
    return None


# --- transceivers and senders --------------------------------------------------------------


def silence_receiver(receiver: RTCRtpReceiver) -> None:
    """Keep aiortc's jitter buffer and decoder off one receiver."""
    receiver.receive = _inert


def silence(transceiver: Any) -> None:
    """Keep aiortc's own media pipeline off a transceiver: no jitter buffer, decoder
    thread, encoder or sender loop ever starts; meetnow moves the packets itself."""
    silence_receiver(transceiver.receiver)
    transceiver.sender.send = _inert


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """The media and RTX SSRCs aiortc chose for a sender (and put in the SDP)."""
    return sender._ssrc, sender._rtx_ssrc


def set_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """The msid stream id the next offer gives this sender's track (browsers lip-sync by it)."""
    sender._stream_id = stream_id


# --- the bundled DTLS transport --------------------------------------------------------------


def hook_dtls(dtls: RTCDtlsTransport, on_rtp: Callable[[bytes], None], on_rtcp: Callable[[bytes], None]) -> None:
    """Route decrypted RTP and RTCP to meetnow instead of aiortc's receivers and senders.

    These are the packets aiortc's own DTLS loop still reads: those queued before
    :func:`receive_now` takes over the transport's input.
    """
    async def rtp(data: bytes, arrival_time_ms: int = 0) -> None:
        on_rtp(data)

    async def rtcp(data: bytes) -> None:
        on_rtcp(data)

    dtls._handle_rtp_data = rtp
    dtls._handle_rtcp_data = rtcp


def receive_now(dtls: RTCDtlsTransport, on_rtp: Callable[[bytes], None], on_rtcp: Callable[[bytes], None],
                on_error: Callable[[], None]) -> None:
    """Take SRTP and SRTCP straight from the socket's callback: unprotected and handed to
    ``on_rtp`` / ``on_rtcp`` at once, with no queue and no await.

    aiortc queues every datagram for its DTLS loop, which awaits three coroutines per
    packet before it decrypts one; a forwarding server spends much of its time there.
    DTLS and anything else still go that way. Only once the DTLS transport is connected
    (its SRTP sessions exist). ``on_error`` counts packets that fail to decrypt (dropped,
    as aiortc drops them) or that the handlers failed on (a bug must cost one packet).
    """
    connection = ice_connection(dtls)
    srtp = dtls._rx_srtp
    queue_it = connection.data_received

    def data_received(data: bytes, component: int) -> None:
        if len(data) > 1 and 127 < data[0] < 192:
            try:
                if 191 < data[1] < 209:  # RTCP packet types 192-208 (RFC 5761 section 4)
                    on_rtcp(srtp.unprotect_rtcp(data))
                else:
                    on_rtp(srtp.unprotect(data))
            except Exception:
                on_error()
            return
        queue_it(data, component)

    connection.data_received = data_received


def dtls_sender(dtls: RTCDtlsTransport) -> Callable[[bytes], Awaitable[None]]:
    """The coroutine that SRTP-protects one packet and sends it (RTP or RTCP alike)."""
    return dtls._send_rtp


def rtp_sender(dtls: RTCDtlsTransport, rtcp: bool = False) -> Callable[[bytes], None]:
    """A plain function that SRTP-protects one RTP packet (SRTCP, one RTCP compound, with
    ``rtcp``) and hands it to the socket.

    aiortc's own path (``_send_rtp``) awaits four coroutines per packet down to the same
    ``transport.sendto``; a forwarder sending one packet to many viewers calls this instead,
    with no await at all. Only for a transport whose DTLS is connected (its SRTP session
    exists); raises ConnectionError once it is not, or while ICE has no selected pair.
    """
    srtp = dtls._tx_srtp
    protect = srtp.protect_rtcp if rtcp else srtp.protect
    connection = ice_connection(dtls)
    nominated = connection._nominated
    connected = type(dtls._state).CONNECTED

    def send(data: bytes) -> None:
        pair = nominated.get(1)
        if pair is None or dtls._state is not connected:
            raise ConnectionError("the transport is not connected")
        pair.protocol.transport.sendto(protect(data), pair.remote_addr)

    return send


def ice_connection(dtls: RTCDtlsTransport) -> Any:
    """The aioice ``Connection`` under a DTLS transport."""
    return dtls.transport.iceGatherer._connection


def bound_backlog(connection: Any, limit: int, on_drop: Callable[[], None]) -> None:
    """Drop incoming datagrams while ``limit`` of them already wait for the event loop.

    aioice queues every datagram in an unbounded asyncio.Queue until the DTLS loop reads
    it; under overload that queue would hold seconds of media that viewers then get late.
    """
    queue = connection._queue
    original = connection.data_received

    def data_received(data: bytes, component: int) -> None:
        if queue.qsize() >= limit:
            on_drop()
            return
        original(data, component)

    connection.data_received = data_received


def ice_sockets(connection: Any) -> list[socket.socket]:
    """The UDP sockets an aioice ``Connection`` has bound (empty before gathering)."""
    found = []
    for protocol in connection._protocols:
        transport = getattr(protocol, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            found.append(sock)
    return found


# --- a client peer that sends pre-encoded media (the benchmarks' synthetic participants) ---


def filter_datagrams(connection: Any, keep: Callable[[bytes], bool]) -> None:
    """Pass an incoming datagram on to aioice (and DTLS, SRTP) only when ``keep`` says so."""
    original = connection.data_received

    def data_received(data: bytes, component: int) -> None:
        if keep(data):
            original(data, component)

    connection.data_received = data_received


def hook_keyframe_requests(sender: RTCRtpSender, on_request: Callable[[], None]) -> None:
    """Call ``on_request`` whenever the remote side asks this sender for a keyframe.

    aiortc only tells its own encoder, which a sender of pre-encoded frames does not use.
    """
    original = sender._send_keyframe

    def send_keyframe() -> None:
        on_request()
        original()

    sender._send_keyframe = send_keyframe


def sender_packet_count(sender: RTCRtpSender) -> int:
    """RTP packets the sender has sent so far (what its RTCP sender reports count)."""
    return sender._RTCRtpSender__packet_count


def set_dtls_sender(dtls: RTCDtlsTransport, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Send every outgoing RTP and RTCP packet through ``send``, which wraps
    :func:`dtls_sender` (to look at packets before they are protected)."""
    dtls._send_rtp = send


def dtls_rtp_handler(dtls: RTCDtlsTransport) -> RtpHandler:
    """The coroutine that takes each decrypted RTP packet (aiortc's receivers, or a hook)."""
    return dtls._handle_rtp_data


def set_dtls_rtp_handler(dtls: RTCDtlsTransport, on_rtp: RtpHandler) -> None:
    """Route decrypted RTP to ``on_rtp``, leaving RTCP to aiortc (a client peer's view)."""
    dtls._handle_rtp_data = on_rtp


# --- what the tests check ----------------------------------------------------------------------

# (owner, attribute, what it must be): each name above, and the shape meetnow relies on.
_SHAPES: tuple[tuple[type, str, str], ...] = (
    (RTCRtpReceiver, "receive", "coroutine function"),
    (RTCRtpSender, "send", "coroutine function"),
    (RTCRtpSender, "_send_keyframe", "function"),
    (RTCRtpSender, "_retransmit", "coroutine function"),
    (RTCDtlsTransport, "_handle_rtp_data", "coroutine function"),
    (RTCDtlsTransport, "_handle_rtcp_data", "coroutine function"),
    (RTCDtlsTransport, "_send_rtp", "coroutine function"),
)
# Instance attributes, set in __init__, so only a live object shows them.
_INSTANCE_SHAPES: tuple[tuple[str, str], ...] = (
    ("sender", "_ssrc"),
    ("sender", "_rtx_ssrc"),
    ("sender", "_stream_id"),
    ("sender", "_RTCRtpSender__packet_count"),
    ("gatherer", "_connection"),
    ("connection", "_queue"),
    ("connection", "_protocols"),
    ("connection", "_nominated"),
    ("connection", "data_received"),
    ("connection", "get_component_candidates"),
    ("connection", "add_remote_candidate"),
    ("connection", "request_received"),
    ("dtls", "_tx_srtp"),
    ("dtls", "_rx_srtp"),
    ("dtls", "_state"),
)


def shape_problems(transceiver: Any = None) -> list[str]:
    """What no longer looks as meetnow expects in the installed aiortc and aioice.

    Empty when all is well. With a live ``transceiver`` (of a peer connection that has
    made an offer) the attributes aiortc sets per object are checked too.
    """
    problems = []
    for owner, name, kind in _SHAPES:
        value = getattr(owner, name, None)
        if value is None:
            problems.append(f"{owner.__name__}.{name} is gone")
        elif kind == "coroutine function" and not inspect.iscoroutinefunction(value):
            problems.append(f"{owner.__name__}.{name} is no longer a coroutine function")
        elif kind == "function" and not callable(value):
            problems.append(f"{owner.__name__}.{name} is no longer callable")
    if transceiver is not None:
        gatherer: RTCIceGatherer = transceiver.receiver.transport.transport.iceGatherer
        objects = {"sender": transceiver.sender, "gatherer": gatherer,
                   "connection": getattr(gatherer, "_connection", None),
                   "dtls": transceiver.receiver.transport}
        for owner_name, name in _INSTANCE_SHAPES:
            owner = objects[owner_name]
            if owner is None or not hasattr(owner, name):
                problems.append(f"{owner_name}.{name} is gone")
    return problems


# --- the standard library's process pool ---------------------------------------------------
# (kept apart from the aiortc names above: it is checked by :func:`pool_shape_problems`)


def pool_processes(pool: ProcessPoolExecutor) -> list[multiprocessing.process.BaseProcess]:
    """The worker processes a ProcessPoolExecutor has started.

    The executor has no public way to end a job that is running (``shutdown`` waits for
    it, or leaves it running); the compose pool terminates its workers at shutdown.
    """
    processes = getattr(pool, "_processes", None) or {}
    return list(processes.values())


def pool_shape_problems() -> list[str]:
    """What no longer looks as :func:`pool_processes` expects in this Python; empty when fine."""
    pool = ProcessPoolExecutor(max_workers=1)  # starts no process until something is submitted
    try:
        processes = getattr(pool, "_processes", None)
        if not isinstance(processes, dict):
            return [f"ProcessPoolExecutor._processes is {type(processes).__name__}, not a dict of processes"]
        return []
    finally:
        pool.shutdown(wait=False)
