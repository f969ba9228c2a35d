"""TURN credentials in coturn's shared-secret scheme: shape, expiry, per-page freshness."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from meeting.media.turn import TurnCredentials, mint_credential, turn_password

URLS = ("turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443?transport=tcp",
        "stun:turn.example.org:3478")


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.5

    def __call__(self) -> float:
        return self.now


def test_password_is_base64_hmac_sha1_of_the_username() -> None:
    # The TURN REST API draft's construction, which coturn's use-auth-secret checks.
    expected = base64.b64encode(hmac.new(b"north", b"1800003600:ab12", hashlib.sha1).digest()).decode()
    assert turn_password("north", "1800003600:ab12") == expected
    credential = mint_credential("north", 1800003600, "ab12")
    assert (credential.username, credential.password) == ("1800003600:ab12", expected)


def test_each_page_gets_its_own_credential_expiring_after_ttl() -> None:
    clock = _Clock()
    turn = TurnCredentials(URLS, "north", 3600, clock=clock)
    first, second = turn.for_page(), turn.for_page()
    relay, stun = first
    assert relay["urls"] == list(URLS[:2]) and stun == {"urls": [URLS[2]]}
    expiry, tag = relay["username"].split(":")
    assert int(expiry) == int(clock.now) + 3600 and len(tag) == 8
    assert relay["credential"] == turn_password("north", relay["username"])
    assert second[0]["username"] != relay["username"]


def test_server_credential_is_replaced_once_half_its_life_is_gone() -> None:
    clock = _Clock()
    turn = TurnCredentials(URLS[:1], "north", 3600, clock=clock)
    [first] = turn.for_server()
    clock.now += 1700
    assert turn.for_server()[0].username == first.username
    clock.now += 200  # 1900 s old: 1700 s left, under half of 3600
    [renewed] = turn.for_server()
    assert renewed.username != first.username
    assert int(renewed.username.split(":")[0]) == int(clock.now) + 3600
    assert renewed.credential == turn_password("north", renewed.username)


def test_the_secret_is_never_shown() -> None:
    turn = TurnCredentials(URLS, "north-secret-value", 3600)
    assert "north-secret-value" not in repr(turn)
    assert "north-secret-value" not in repr(turn.for_page()) + repr(turn.for_server())


def test_no_secret_no_minter() -> None:
    with pytest.raises(ValueError):
        TurnCredentials(URLS, "", 3600)
