# HMAC-SHA256 (RFC 2104) built on hashlib.sha256, the MAC of every frame (SPEC.md section 4).
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cose, fast


@pytest.mark.parametrize("key_len", [0, 1, 15, 16, 24, 31, 32, 33, 48, 63, 64, 65, 100, 131, 200])
def test_portable_hmac_equals_hmac_for_key_lengths(key_len):
    key = bytes((i * 13 + 7) & 0xFF for i in range(key_len))
    for msg in (b"", b"x", bytes(range(256)) * 3):
        expected = hmac.digest(key, msg, "sha256")
        assert cose.hmac_sha256_portable(key, msg) == expected
        assert cose.hmac_sha256(key, msg) == expected
        assert cose.hmac_sha256(bytearray(key), msg) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=140), st.binary(max_size=600))
def test_portable_hmac_equals_hmac(key, msg):
    assert cose.hmac_sha256_portable(key, msg) == hmac.digest(key, msg, "sha256") == cose.hmac_sha256(key, msg)


def test_rfc4231_case_2():
    mac = cose.hmac_sha256_portable(b"Jefe", b"what do ya want for nothing?")
    assert mac.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_keyed_state_cache_stays_bounded_and_correct():
    for i in range(fast._KEYED_MAX + 10):
        key = i.to_bytes(4, "big") * 4
        assert cose.hmac_sha256(key, b"m") == hmac.digest(key, b"m", "sha256")
    assert len(fast._KEYED) <= fast._KEYED_MAX


def test_mac_tag_is_compared_in_constant_time_helper():
    assert cose._eq(b"12345678", b"12345678")
    assert not cose._eq(b"12345678", b"12345679")
    assert not cose._eq(b"1234567", b"12345678")
