"""meeting/internals.py: the private aiortc, aioice and executor names it relies on are all still there.

When aiortc (pinned in pyproject.toml) or Python changes, this fails first, naming what moved:
meeting/internals.py is the one module to adapt.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from meeting import internals


def test_installed_aiortc_has_every_private_name_used() -> None:
    assert internals.shape_problems() == []


async def test_a_live_transceiver_has_every_instance_attribute_used() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("video", direction="sendonly")
        assert internals.shape_problems(transceiver) == []
        connection = internals.ice_connection(transceiver.receiver.transport)
        assert internals.ice_sockets(connection) == []  # nothing bound before gathering
        assert internals.sender_packet_count(transceiver.sender) == 0
        await pc.setLocalDescription(await pc.createOffer())
        ssrc, rtx_ssrc = internals.sender_ssrcs(transceiver.sender)
        assert ssrc != rtx_ssrc and f"a=ssrc:{ssrc} " in pc.localDescription.sdp
    finally:
        await pc.close()


def test_a_moved_attribute_is_named() -> None:
    connection = SimpleNamespace(_queue=None, data_received=None, get_component_candidates=None,
                                 add_remote_candidate=None, request_received=None)  # no _protocols
    sender = SimpleNamespace(_ssrc=1, _rtx_ssrc=2, _stream_id="s")  # no packet count
    transceiver = SimpleNamespace(
        sender=sender,
        receiver=SimpleNamespace(transport=SimpleNamespace(transport=SimpleNamespace(
            iceGatherer=SimpleNamespace(_connection=connection)))),
    )
    assert internals.shape_problems(transceiver) == [
        "sender._RTCRtpSender__packet_count is gone",
        "connection._protocols is gone",
        "connection._nominated is gone",
        "dtls._tx_srtp is gone",
        "dtls._rx_srtp is gone",
        "dtls._state is gone",
    ]


def test_a_missing_class_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiortc import RTCDtlsTransport

    monkeypatch.delattr(RTCDtlsTransport, "_send_rtp")
    assert internals.shape_problems() == ["RTCDtlsTransport._send_rtp is gone"]


def test_the_process_pool_still_lists_its_processes() -> None:
    assert internals.pool_shape_problems() == []


def test_filtered_datagrams_never_reach_aioice() -> None:
    seen: list[bytes] = []
    connection = SimpleNamespace(data_received=lambda data, component: seen.append(data))
    internals.filter_datagrams(connection, lambda data: data != b"drop")
    connection.data_received(b"keep", 1)
    connection.data_received(b"drop", 1)
    assert seen == [b"keep"]
