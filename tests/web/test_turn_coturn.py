"""The server's TURN credentials against a real coturn (Debian's, started here on loopback)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import AsyncIterator

import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint

from meeting.config import Config, TurnConfig
from meeting.media.sfu import Sfu
from meeting.media.turn import mint_credential
from tests.coturn import Coturn, coturn
from meeting.session.context import ice_servers_for, turn_credentials


@pytest.fixture
async def turn(tmp_path: Path) -> AsyncIterator[Coturn]:
    async with coturn(tmp_path / "coturn") as server:
        yield server


def _config(config: Config, server: Coturn, secret: str | None = None) -> Config:
    return dataclasses.replace(config, turn=TurnConfig(
        urls=(server.url("udp"), server.url("tcp")), secret=secret or server.secret, ttl=3600))


async def _allocate(server: Coturn, username: str, password: str, transport: str = "udp") -> tuple[str, int]:
    relay, _ = await asyncio.wait_for(create_turn_endpoint(
        asyncio.DatagramProtocol, (server.host, server.port), username, password, transport=transport), 10)
    try:
        return relay.get_extra_info("sockname")
    finally:
        relay.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_page_credential_gets_a_relay(turn: Coturn, config: Config, transport: str) -> None:
    [relay] = ice_servers_for(_config(config, turn), turn_credentials(_config(config, turn)))()
    address = await _allocate(turn, relay["username"], relay["credential"], transport)
    assert address[0] == "127.0.0.1"


async def test_an_expired_credential_is_refused(turn: Coturn) -> None:
    expired = mint_credential(turn.secret, int(time.time()) - 5, "late")
    with pytest.raises(TransactionFailed) as refused:
        await _allocate(turn, expired.username, expired.password)
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401
    # The same tag, still valid, is accepted: only the expiry differs.
    valid = mint_credential(turn.secret, int(time.time()) + 60, "late")
    await _allocate(turn, valid.username, valid.password)


async def test_a_credential_from_another_secret_is_refused(turn: Coturn, config: Config) -> None:
    [relay] = ice_servers_for(config, turn_credentials(_config(config, turn, secret="not-the-secret")))()
    with pytest.raises(TransactionFailed) as refused:
        await _allocate(turn, relay["username"], relay["credential"])
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401


async def test_the_servers_own_peers_offer_a_relay_candidate(turn: Coturn, config: Config) -> None:
    configured = _config(config, turn)
    sfu = Sfu(configured.media, turn=turn_credentials(configured))
    offers = []

    async def keep(offer: object) -> None:
        offers.append(offer)

    try:
        await sfu.open("r").join("p", keep)
        [offer] = offers
        relay_lines = [line for line in offer.sdp.splitlines() if "typ relay" in line]
        assert relay_lines and " 127.0.0.1 " in relay_lines[0]
    finally:
        await sfu.close()
    # coturn saw the server's peer authenticate with a minted (expiring) username.
    assert "incoming packet ALLOCATE processed, success" in turn.log.read_text()
