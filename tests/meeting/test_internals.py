"""The private aiortc, aioice and executor names meetnow relies on still look as it expects.

When aiortc (pinned in pyproject.toml) or Python changes, this fails first, naming what moved:
meeting/internals.py is the one module to adapt.
"""

from __future__ import annotations

from aiortc import RTCConfiguration, RTCPeerConnection

from meeting import internals


def test_the_classes_still_have_the_names_meetnow_replaces_or_calls() -> None:
    assert internals.shape_problems() == []


async def test_a_live_peer_connection_still_has_the_attributes_meetnow_reads() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())  # gathers: the ICE objects exist now
        assert internals.shape_problems(transceiver) == []
        ssrc, rtx_ssrc = internals.sender_ssrcs(transceiver.sender)
        assert ssrc != rtx_ssrc and f"a=ssrc:{ssrc} " in pc.localDescription.sdp
    finally:
        await pc.close()


def test_the_process_pool_still_lists_its_processes() -> None:
    assert internals.pool_shape_problems() == []


def test_a_missing_name_is_reported_by_name(monkeypatch) -> None:
    from aiortc import RTCDtlsTransport

    monkeypatch.delattr(RTCDtlsTransport, "_send_rtp")
    assert internals.shape_problems() == ["RTCDtlsTransport._send_rtp is gone"]
