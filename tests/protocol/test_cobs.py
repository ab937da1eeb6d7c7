# Serial framing (SPEC.md section 7): CRC-16/CCITT-FALSE, COBS, and the deframer's resync.
import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cobs, cose
from protocol.cbor import FrameError
from tests.protocol import vecs

MESSAGES, _ = vecs.load()
FRAMES = [vecs.unhex(v["frame"]) for v in MESSAGES if v["valid"]]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 0xFFFF))
def test_crc16_is_crc_hqx(data, init):
    assert cobs.crc16_portable(data, init) == binascii.crc_hqx(data, init) == cobs.crc16(data, init)


def test_crc16_check_value():
    assert cobs.crc16_portable(b"123456789") == cobs.crc16(b"123456789") == 0x29B1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_round_trip(data):
    enc = cobs.cobs_encode(data)
    assert b"\x00" not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs.cobs_decode(enc) == data


@pytest.mark.parametrize("chunk", [b"\x00", b"\x03\x01", b"\x05\x01\x02"])
def test_cobs_decode_refuses_bad_input(chunk):
    assert cobs.cobs_decode(chunk) is None


def test_largest_message_passes_and_one_more_byte_does_not():
    frame = next(vecs.unhex(s["stream"]) for s in vecs.load()[1] if s["name"].startswith("largest"))
    events = cobs.Deframer().feed(frame)
    assert [k for k, _ in events] == ["frame"] and len(events[0][1]) == cose.MAX_MESSAGE
    assert len(frame) - 2 <= cobs.MAX_ENCODED
    with pytest.raises(FrameError) as e:
        cobs.encode(bytes(cose.MAX_MESSAGE + 1))
    assert e.value.reason == "oversize"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(FRAMES), st.integers(1, 50))
def test_resync_after_noise(noise, frame, piece):
    d = cobs.Deframer()
    stream = noise + cobs.encode(frame)
    events = []
    for i in range(0, len(stream), piece):
        events += d.feed(stream[i : i + piece])
    assert events[-1] == ("frame", frame)


def test_text_between_frames():
    d = cobs.Deframer()
    events = d.feed(b"boot\r\n" + cobs.encode(FRAMES[0]) + b"I (1234) sampler: ok\n" + cobs.encode(FRAMES[1]))
    assert events == [("text", b"boot\r\n"), ("frame", FRAMES[0]), ("text", b"I (1234) sampler: ok\n"),
                      ("frame", FRAMES[1])]
    assert d.feed(b"trailing console line\n") == []
    assert d.pending_text() == b"trailing console line\n"
    assert d.pending_text() == b""


def test_oversize_chunk_is_dropped_up_to_the_next_delimiter():
    d = cobs.Deframer()
    events = d.feed(b"\x00" + b"\x01" * 2000 + cobs.encode(FRAMES[0]))
    assert events == [("noise", "oversize"), ("frame", FRAMES[0])]
    assert d.counts["oversize"] == 1
    assert len(d._buf) == 0


def test_crc_error_is_counted():
    enc = bytearray(cobs.encode(FRAMES[0]))
    enc[-3] = enc[-3] % 255 + 1  # the CRC's last byte, still not 0x00
    d = cobs.Deframer()
    assert d.feed(bytes(enc) + cobs.encode(FRAMES[1])) == [("noise", "crc"), ("frame", FRAMES[1])]
    assert d.counts["crc"] == 1 and d.counts["frames"] == 1
