"""ICE policy: announced addresses, remote candidates, and the aioice hooks (loopback only)."""

from __future__ import annotations

import asyncio

import pytest
from aioice import Candidate, Connection, stun

from meeting.config import IceServer
from meeting.media.ice import (
    CandidatePolicy,
    apply_ice_policy,
    filter_sdp_candidates,
    is_mdns_name,
    parse_candidate,
    plan_host_bindings,
    rtc_ice_servers,
)
from tests.meeting.waiting import wait_for

LOOPBACK = CandidatePolicy.from_config(["127.0.0.0/8"])


@pytest.mark.parametrize(
    "host, transport, allowed",
    [
        ("127.0.0.1", "udp", True),
        ("127.3.4.5", "UDP", True),
        ("192.0.2.1", "udp", False),
        ("::1", "udp", False),
        ("127.0.0.1", "tcp", False),
        ("6d2c7d1b-0d57-4c3a-9f62-2f1bb3c1d3c4.local", "udp", False),
        ("not-an-ip", "udp", False),
    ],
)
def test_loopback_policy(host, transport, allowed):
    assert LOOPBACK.allows_candidate(host, transport) is allowed


def test_empty_policy_allows_any_ip_but_never_mdns():
    policy = CandidatePolicy.from_config([])
    assert policy.allows_candidate("203.0.113.5")
    assert policy.allows_candidate("2001:db8::1")
    assert not policy.allows_candidate("host.local")
    assert is_mdns_name("ABC.LOCAL.")


def test_malformed_network_is_rejected():
    with pytest.raises(ValueError):
        CandidatePolicy.from_config(["not/a/network"])


def test_parse_candidate_reads_browser_candidates():
    c = parse_candidate("candidate:842163049 1 udp 1677729535 198.51.100.7 61665 typ srflx raddr 10.0.0.2 rport 61665 generation 0 ufrag abcd network-cost 999")
    assert (c.foundation, c.component, c.protocol, c.priority, c.ip, c.port, c.type) == (
        "842163049", 1, "udp", 1677729535, "198.51.100.7", 61665, "srflx")
    assert (c.relatedAddress, c.relatedPort) == ("10.0.0.2", 61665)
    assert parse_candidate("a=candidate:1 1 UDP 5 127.0.0.1 9 typ host").protocol == "udp"


@pytest.mark.parametrize(
    "text",
    ["", "candidate:", "candidate:1 1 udp 5 127.0.0.1 9 host", "1 1 udp 5 127.0.0.1 9 typ host",
     "candidate:1 x udp 5 127.0.0.1 9 typ host", "candidate:1 1 udp 5 127.0.0.1 70000 typ host",
     "candidate:1 1 udp 5 127.0.0.1 9 typ nonsense", "candidate:1 1 udp 5 127.0.0.1 9 typ srflx raddr 1.2.3.4 rport x"],
)
def test_parse_candidate_rejects_malformed(text):
    with pytest.raises(ValueError):
        parse_candidate(text)


def test_filter_sdp_candidates():
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=candidate:1 1 udp 5 127.0.0.1 5000 typ host\r\n"
        "a=candidate:2 1 udp 5 x.local 5001 typ host\r\n"
        "a=candidate:3 1 udp 5 192.0.2.1 5002 typ host\r\n"
        "a=candidate:broken\r\n"
        "a=mid:0\r\n"
    )
    out, dropped = filter_sdp_candidates(sdp, LOOPBACK)
    assert dropped == 3
    assert "127.0.0.1 5000" in out and ".local" not in out and "192.0.2.1" not in out and "a=mid:0" in out


def test_plan_host_bindings():
    assert plan_host_bindings(["127.0.0.1"], []) == [("127.0.0.1", "127.0.0.1")]
    assert plan_host_bindings(["10.1.2.3"], ["10.1.2.3"]) == [("10.1.2.3", "10.1.2.3")]
    # not an address of this machine: a 1:1 NAT mapping, bound on the wildcard
    assert plan_host_bindings(["203.0.113.9", "2001:db8::9"], ["10.1.2.3"]) == [
        ("0.0.0.0", "203.0.113.9"),
        ("::", "2001:db8::9"),
    ]


def test_ice_servers_from_config():
    servers = rtc_ice_servers([IceServer(urls=("turn:turn.example.org:3478",), username="u", credential="p"),
                               IceServer(urls=())])
    assert len(servers) == 1
    assert servers[0].urls == ["turn:turn.example.org:3478"] and servers[0].username == "u"
    assert rtc_ice_servers([]) == []


async def test_announced_loopback_address_is_gathered():
    connection = Connection(ice_controlling=True)
    apply_ice_policy(connection, ("127.0.0.1",), LOOPBACK)
    apply_ice_policy(connection, ("127.0.0.1",), LOOPBACK)  # idempotent
    await connection.gather_candidates()
    try:
        assert [(c.host, c.type) for c in connection.local_candidates] == [("127.0.0.1", "host")]
    finally:
        await connection.close()


async def test_remote_candidates_outside_the_policy_are_dropped():
    connection = Connection(ice_controlling=True)
    apply_ice_policy(connection, ("127.0.0.1",), LOOPBACK)
    for host in ("127.0.0.1", "192.0.2.1", "abc.local"):
        await connection.add_remote_candidate(
            Candidate(foundation="1", component=1, transport="udp", priority=1, host=host, port=5000, type="host")
        )
    assert [c.host for c in connection.remote_candidates] == ["127.0.0.1"]
    await connection.close()


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr) -> None:
        self.received.append(data)


async def test_checks_from_disallowed_addresses_get_no_answer():
    # The agent listens on 127.0.0.1 but only peers in 127.0.0.2/32 are allowed.
    connection = Connection(ice_controlling=True)
    apply_ice_policy(connection, ("127.0.0.1",), CandidatePolicy.from_config(["127.0.0.2/32"]))
    await connection.gather_candidates()
    port = connection.local_candidates[0].port
    loop = asyncio.get_running_loop()
    refused_t, refused = await loop.create_datagram_endpoint(_Client, local_addr=("127.0.0.1", 0))
    allowed_t, allowed = await loop.create_datagram_endpoint(_Client, local_addr=("127.0.0.2", 0))
    try:
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        refused_t.sendto(bytes(request), ("127.0.0.1", port))
        allowed_t.sendto(bytes(request), ("127.0.0.1", port))
        # The allowed request (unauthenticated) gets its error response; by then the
        # refused one, sent first to the same socket, was handled: silently dropped.
        await wait_for(lambda: allowed.received, 2, "a response to the allowed check")
        assert refused.received == []
        assert connection.remote_candidates == []
    finally:
        refused_t.close()
        allowed_t.close()
        await connection.close()
