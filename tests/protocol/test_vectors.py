# The golden vectors (SPEC.md section 11): valid ones decode to their content and re-encode to
# the identical bytes; invalid ones are refused with their reason; serial streams deframe to
# their events. The files are what tools/make_vectors.py writes (deterministic).
import pathlib

import cbor2
import pytest

from protocol import cbor, cobs, cose, keyring, message, senml
from protocol.cbor import FrameError
from protocol.message import decode
from tests.protocol import signed_vecs, vecs
from tools import make_vectors

MESSAGES, STREAMS = vecs.load()
VALID = [v for v in MESSAGES if v["valid"]]
INVALID = [v for v in MESSAGES if not v["valid"]]


def ids(vectors):
    return ["%s: %s" % (v["file"], v["name"]) for v in vectors]


def test_vector_files_are_what_make_vectors_writes(tmp_path):
    assert make_vectors.main(["--out", str(tmp_path)]) == 0
    for f in vecs.files():
        assert (tmp_path / f).read_text() == (pathlib.Path(vecs.FOLDER) / f).read_text(), (
            f"protocol/vectors/{f} is stale: run python tools/make_vectors.py")


def test_the_vector_set_covers_the_spec():
    reasons = {v["reason"] for v in INVALID}
    assert {"tag", "truncated", "mac", "unknown", "trailing", "overlong", "type", "version", "oversize", "alg",
            "cose", "kid", "payload", "dupkey", "depth", "utf8"} <= reasons
    assert {v["decoded"]["type"] for v in VALID} == {"data", "ack", "cmd", "boot", "retired"}
    assert {v["decoded"]["op"] for v in VALID if v["decoded"]["type"] == "cmd"} == {"interval", "thresholds",
                                                                                  "reboot", "time", None}
    assert any(v["decoded"].get("signed") for v in VALID)  # a relayed signed command (SPEC 6.7)


@pytest.mark.parametrize("v", VALID, ids=ids(VALID))
def test_valid_vector(v):
    frame = vecs.unhex(v["frame"])
    assert vecs.to_json(decode(frame, vecs.key_for(v))) == v["decoded"]
    assert vecs.reencode(v) == frame
    assert len(frame) == v["size"]
    _, _, payload, _ = cose.parse(frame)
    assert payload.hex() == v["payload"]
    assert cbor.dumps(cbor.loads(payload)) == payload == cbor2.dumps(cbor2.loads(payload), canonical=True)
    assert cobs.encode(frame).hex() == v["serial"]
    assert cobs.Deframer().feed(vecs.unhex(v["serial"])) == [("frame", frame)]
    if v["decoded"]["type"] == "data":
        d = vecs.from_json(v["decoded"])
        records = cbor.loads(payload)[5]
        assert all(isinstance(k, int) for r in records for k in r)  # SenML with integer labels
        assert senml.to_json(d["records"], base_name=v["node"] + ":", base_time=d["time"]) == v["senml_json"]


SIGNED = signed_vecs.signed()


@pytest.mark.parametrize("v", SIGNED, ids=ids(SIGNED))
def test_signed_command_vector(v):
    # the node's verdict (SPEC 6.7) and, for what the encoder made, the same bytes again
    assert signed_vecs.check_signed(v) is None
    assert len(vecs.unhex(v["token"])) == v["size"]


def test_signed_vectors_cover_every_verdict_a_token_can_get():
    from protocol import command

    assert {v["result"] for v in SIGNED} == set(range(len(command.RESULTS))) - {command.UNSIGNED, command.NO_KEY}


@pytest.mark.parametrize("v", INVALID, ids=ids(INVALID))
def test_invalid_vector(v):
    frame = vecs.unhex(v["frame"])
    with pytest.raises(FrameError) as e:
        decode(frame, vecs.key_for(v))
    assert e.value.reason == v["reason"], str(e.value)


@pytest.mark.parametrize("v", STREAMS, ids=ids(STREAMS))
def test_serial_stream_vector(v):
    stream = vecs.unhex(v["stream"])
    for piece in (len(stream), 1, 7):
        d = cobs.Deframer()
        events = []
        for i in range(0, len(stream), piece):
            events += [[k, x.hex() if isinstance(x, bytes) else x] for k, x in d.feed(stream[i : i + piece])]
        assert events == v["events"]
        assert d.counts == v["counts"]


def test_typical_frame_meets_the_size_goal():
    # issue 2: a typical 6-reading signed frame of at most 100 bytes
    typical = next(v for v in VALID if v["name"].startswith("typical"))
    assert len(typical["decoded"]["records"]) == 6
    assert typical["size"] <= 100
    assert typical["senml_json_size"] > typical["size"]


def test_renumbered_frame_is_the_old_one_under_a_new_boot():
    # SPEC.md 6.5: a node resends a refused frame with only boot and seq changed
    v = next(v for v in VALID if "renumbered_from" in v)
    old = vecs.unhex(v["renumbered_from"])
    key = vecs.key_for(v)
    before, after = decode(old, key), decode(vecs.unhex(v["frame"]), key)
    assert (before["boot"], before["seq"], after["boot"], after["seq"]) == (1, 0, 8, 0)
    assert {k: x for k, x in before.items() if k not in ("boot", "seq")} == \
        {k: x for k, x in after.items() if k not in ("boot", "seq")}
    assert message.renumber(vecs.unhex(v["key"]), v["node"], old, 8, 0) == vecs.unhex(v["frame"])


def test_a_rotated_key_is_named_in_the_header_and_picked_by_version():
    # SPEC.md 4.1 and 4.5: label 10 names the key version; a receiver holding versions picks the
    # key by it, answers "retired" below its newest version and "unknown" above it
    v = next(v for v in VALID if "key_version" in v)
    frame = vecs.unhex(v["frame"])
    key = vecs.unhex(v["key"])
    assert keyring.frame_key_version(frame) == v["key_version"] == 2
    assert cose.parse(frame)[1] == cose.protected_header(b"sew-07", 2) == bytes.fromhex("a3010404467365772d30370a4102")
    def holding(versions):
        return {"sew-07": keyring.chooser(versions, "sew-07")}.get

    assert decode(frame, holding({1: b"x" * 16, 2: key}))["seq"] == 0
    with pytest.raises(FrameError) as e:
        decode(frame, holding({3: key}))
    assert e.value.reason == "retired"
    with pytest.raises(FrameError) as e:
        decode(frame, holding({1: key}))
    assert e.value.reason == "unknown"
    r = next(v for v in VALID if v["decoded"]["type"] == "retired")
    old = vecs.unhex(r["retired_frame"])
    assert keyring.frame_key_version(old) == 1
    with pytest.raises(FrameError) as e:
        decode(old, holding({2: vecs.unhex(r["key"])}))
    assert e.value.reason == "retired"
    got = decode(vecs.unhex(r["frame"]), vecs.key_for(r))
    assert (got["boot"], got["seq"], got["key_version"]) == (3, 1234, 2)
    assert keyring.encode_retired(vecs.unhex(r["key"]), "sew-07", 3, 1234, 2) == vecs.unhex(r["frame"])
