from meeting import ids


def test_ten_thousand_ids_are_distinct_and_carry_128_bits() -> None:
    minted = [ids.new_id() for _ in range(10_000)]
    assert len(set(minted)) == len(minted)
    for token in minted:
        raw = ids.decode_token(token)
        assert raw is not None and len(raw) >= 16
        assert ids.is_valid_id(token)


def test_host_keys_are_long_url_safe_and_distinct() -> None:
    keys = {ids.new_host_key() for _ in range(1000)}
    assert len(keys) == 1000
    for key in keys:
        raw = ids.decode_token(key)
        assert raw is not None and len(raw) >= 16


def test_malformed_ids_are_rejected() -> None:
    for bad in ["", "abc", "a" * 21, "a" * 23, "a" * 22 + "=", "../../etc/passwd", "é" * 22, "a" * 5000]:
        assert not ids.is_valid_id(bad), bad


def test_key_hash_hides_the_key_and_tells_keys_apart() -> None:
    key = ids.new_host_key()
    digest = ids.hash_key(key)
    assert key not in digest and len(digest) == 64
    assert ids.hash_key(key) == digest
    assert ids.hash_key(ids.new_host_key()) != digest


def test_short_form_does_not_reveal_the_id() -> None:
    token = ids.new_id()
    assert ids.short(token).startswith(token[:4])
    assert token not in ids.short(token)
