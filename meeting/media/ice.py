"""ICE policy: which addresses the server announces, which remote candidates it uses.

The pure part decides: :class:`CandidatePolicy` says whether a remote address may be
used, :func:`parse_candidate` reads a trickled candidate, :func:`filter_sdp_candidates`
drops unusable candidates from an SDP, :func:`plan_host_bindings` turns the configured
announce addresses into sockets to bind.

The integration part, :func:`apply_ice_policy`, is the one place meetnow reaches into
aioice 0.13 (pinned through aiortc 1.16). aioice has no setting for the addresses it
gathers: ``Connection.gather_candidates`` calls the module-level
``aioice.ice.get_host_addresses``, which always skips 127.0.0.1 and ::1. Patching that
module function would change every ICE agent in the process (test clients included), so
instead three methods are replaced on one ``Connection`` instance:

- ``get_component_candidates``: binds the announced addresses instead of the interface
  list aioice computed (STUN/TURN gathering is untouched);
- ``add_remote_candidate``: drops candidates the policy rejects, whether they came in an
  SDP answer or were trickled, before aioice pairs them or resolves an mDNS name;
- ``request_received``: ignores STUN binding requests from rejected addresses, so the
  agent neither answers them nor learns a peer-reflexive candidate from them.

Each replacement calls the original method, and tests cover all three.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import ifaddr
from aioice.candidate import candidate_foundation
from aiortc import RTCIceServer
from aiortc.rtcicetransport import RTCIceCandidate

from meeting import internals
from meeting.config import IceServer

logger = logging.getLogger(__name__)

_CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
_PATCHED = "_meetnow_ice_policy"


def is_mdns_name(host: str) -> bool:
    """Whether ``host`` is an mDNS name (``<uuid>.local``), which we never resolve."""
    return host.lower().rstrip(".").endswith(".local")


@dataclass(frozen=True)
class CandidatePolicy:
    """Which remote addresses ICE may use: any in ``networks``, or any IP when empty.

    mDNS names are always refused: resolving them means multicast queries on the
    server's networks, and browsers behind them are reachable through their srflx or
    relay candidates anyway.
    """

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_config(cls, allowed_peer_networks: Iterable[str]) -> "CandidatePolicy":
        """Build from CIDR strings; raises ValueError on a malformed network."""
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in allowed_peer_networks))

    def allows_address(self, host: str) -> bool:
        """Whether a remote IP address (not a name) may be used."""
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if not self.networks:
            return True
        return any(ip.version == net.version and ip in net for net in self.networks)

    def allows_candidate(self, host: str, transport: str = "udp") -> bool:
        """Whether a remote candidate may be used (UDP, IP address, allowed network)."""
        if transport.lower() != "udp" or is_mdns_name(host):
            return False
        return self.allows_address(host)


def parse_candidate(text: str) -> RTCIceCandidate:
    """Parse a trickled ``candidate:...`` attribute value (``a=`` prefix optional).

    Raises ValueError with a short reason when it is malformed.
    """
    if not isinstance(text, str):
        raise ValueError("candidate must be a string")
    line = text.strip()
    if line.startswith("a="):
        line = line[2:]
    if not line.startswith("candidate:"):
        raise ValueError("candidate must start with 'candidate:'")
    bits = line[len("candidate:") :].split()
    if len(bits) < 8 or bits[6] != "typ":
        raise ValueError("candidate has too few fields")
    foundation, component, protocol, priority, host, port, _, ctype = bits[:8]
    try:
        component_n = int(component)
        priority_n = int(priority)
        port_n = int(port)
    except ValueError:
        raise ValueError("candidate component, priority and port must be integers") from None
    if not 1 <= component_n <= 256 or not 0 <= port_n <= 65535 or priority_n < 0:
        raise ValueError("candidate component, priority or port out of range")
    if ctype not in _CANDIDATE_TYPES:
        raise ValueError(f"unknown candidate type {ctype!r}")
    if not host or not foundation:
        raise ValueError("candidate has no address")
    candidate = RTCIceCandidate(
        component=component_n,
        foundation=foundation,
        ip=host,
        port=port_n,
        priority=priority_n,
        protocol=protocol.lower(),
        type=ctype,
    )
    rest = bits[8:]
    for i in range(0, len(rest) - 1, 2):
        key, value = rest[i], rest[i + 1]
        if key == "raddr":
            candidate.relatedAddress = value
        elif key == "rport":
            try:
                candidate.relatedPort = int(value)
            except ValueError:
                raise ValueError("candidate rport must be an integer") from None
        elif key == "tcptype":
            candidate.tcpType = value
    return candidate


def filter_sdp_candidates(sdp: str, policy: CandidatePolicy) -> tuple[str, int]:
    """Drop ``a=candidate`` lines the policy rejects; returns the SDP and how many went."""
    kept = []
    dropped = 0
    lines = sdp.splitlines()
    for line in lines:
        if line.startswith("a=candidate:"):
            try:
                c = parse_candidate(line)
            except ValueError:
                dropped += 1
                continue
            if not policy.allows_candidate(c.ip, c.protocol):
                dropped += 1
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped


def plan_host_bindings(
    announce: Sequence[str], local_addresses: Iterable[str]
) -> list[tuple[str, str]]:
    """``(bind address, announced address)`` pairs for the configured announce list.

    An address the machine has is bound and announced as is. Any other address is taken
    as a 1:1 NAT mapping of this host (a cloud VM's public IP): the socket is bound on
    the wildcard address of that family and the public address is announced.
    """
    local = set(local_addresses)
    plan = []
    for address in announce:
        ip = ipaddress.ip_address(address)
        if address in local or ip.is_loopback:
            plan.append((address, address))
        else:
            plan.append(("0.0.0.0" if ip.version == 4 else "::", address))
    return plan


def local_addresses() -> list[str]:
    """Every address on the machine's interfaces, loopback included."""
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            found.append(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return found


def rtc_ice_servers(servers: Iterable[IceServer]) -> list[RTCIceServer]:
    """aiortc ICE servers from the configuration (an empty list means none at all)."""
    return [
        RTCIceServer(
            urls=list(s.urls),
            username=s.username or None,
            credential=s.credential or None,
        )
        for s in servers
        if s.urls
    ]


# --- aioice integration ------------------------------------------------------------------


def apply_ice_policy(connection: Any, announce: Sequence[str], policy: CandidatePolicy) -> None:
    """Make one aioice ``Connection`` announce ``announce`` and obey ``policy``.

    Call it before candidates are gathered (for aiortc: before ``setLocalDescription``).
    With an empty ``announce`` aioice keeps gathering its interface addresses. Applying
    twice is a no-op.
    """
    if getattr(connection, _PATCHED, False):
        return
    original_gather = connection.get_component_candidates
    original_add = connection.add_remote_candidate
    original_request = connection.request_received

    if announce:
        plan = plan_host_bindings(announce, local_addresses())

        async def get_component_candidates(component: int, addresses: list[str], timeout: int = 5) -> list:
            candidates = await original_gather(
                component=component, addresses=[bind for bind, _ in plan], timeout=timeout
            )
            # Wildcard-bound sockets report 0.0.0.0 or ::; announce the mapped address.
            mapped = [public for bind, public in plan if bind != public]
            for candidate in candidates:
                if candidate.type == "host" and candidate.host in ("0.0.0.0", "::") and mapped:
                    candidate.host = mapped.pop(0)
                    candidate.foundation = candidate_foundation("host", "udp", candidate.host)
            return candidates

        connection.get_component_candidates = get_component_candidates

    async def add_remote_candidate(candidate: Any) -> None:
        if candidate is not None and not policy.allows_candidate(candidate.host, candidate.transport):
            logger.debug("ignoring remote candidate %s (%s)", candidate.host, candidate.transport)
            return
        await original_add(candidate)

    def request_received(message: Any, addr: tuple[str, int], protocol: Any) -> None:
        if not policy.allows_address(addr[0]):
            return  # no response, no peer-reflexive candidate
        original_request(message, addr, protocol)

    connection.add_remote_candidate = add_remote_candidate
    connection.request_received = request_received
    setattr(connection, _PATCHED, True)


def ice_connections(pc: Any) -> list[Any]:
    """The aioice connections behind an aiortc peer connection's transceivers."""
    seen: dict[int, Any] = {}
    for transceiver in pc.getTransceivers():
        connection = internals.ice_connection(transceiver.receiver.transport)
        seen[id(connection)] = connection
    return list(seen.values())
