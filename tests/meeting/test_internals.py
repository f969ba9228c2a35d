"""meeting/internals.py: the private aiortc and aioice names it relies on are all still there."""

from __future__ import annotations

from types import SimpleNamespace

from aiortc import RTCConfiguration, RTCPeerConnection

from meeting import internals


def test_installed_aiortc_has_every_private_name_used() -> None:
    assert internals.shape_problems() == []


async def test_a_live_transceiver_has_every_instance_attribute_used() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("video")
        assert internals.shape_problems(transceiver) == []
        connection = internals.ice_connection(transceiver.receiver.transport)
        assert internals.ice_sockets(connection) == []  # nothing bound before gathering
        assert internals.sender_packet_count(transceiver.sender) == 0
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
    ]


def test_filtered_datagrams_never_reach_aioice() -> None:
    seen: list[bytes] = []
    connection = SimpleNamespace(data_received=lambda data, component: seen.append(data))
    internals.filter_datagrams(connection, lambda data: data != b"drop")
    connection.data_received(b"keep", 1)
    connection.data_received(b"drop", 1)
    assert seen == [b"keep"]
