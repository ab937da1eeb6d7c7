# citynode decode: a frame as hex, base64 (the MQTT "frame" field) or a serial capture ->
# CBOR diagnostic notation and readings; with --keys, whether the MAC verifies.
import base64

from gateway.files import write_private
from gateway.keys import format_keys
from protocol import cobs, message, senml
from tools import cli

KEY = bytes(range(1, 17))
FRAME = message.encode_data(KEY, "sew-07", 3, 1234, 60000, [senml.record("l", 0.42), senml.record("t", 21.5)],
                            flags=message.F_STORM)


def decode(capsys, *args):
    rc = cli.main(["decode", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_hex_with_keys_verifies(tmp_path, capsys):
    keys = tmp_path / "keys.toml"
    write_private(keys, format_keys({"sew-07": KEY}))
    rc, out, _ = decode(capsys, FRAME.hex(), "--keys", str(keys))
    assert rc == 0
    assert out.startswith(f"{len(FRAME)} bytes")
    assert "17([<< {1: 4, 4: h'7365772d3037'} >>, {}, <<" in out  # tag 17, protected header with the kid
    assert "MAC: ok (key of sew-07)" in out
    assert "node sew-07: type=data, boot=3, seq=1234" in out
    assert "l    0.42 m" in out and "t    21.5 Cel" in out


def test_base64_and_serial_capture_and_a_wrong_key(tmp_path, capsys):
    keys = tmp_path / "keys.toml"
    write_private(keys, format_keys({"sew-07": bytes(16)}))
    rc, out, _ = decode(capsys, base64.b64encode(FRAME).decode(), "--keys", str(keys))
    assert rc == 1 and "MAC: FAILED" in out
    rc, out, _ = decode(capsys, cobs.encode(FRAME).hex())
    assert rc == 0 and "seq=1234" in out
    assert "MAC: not checked (give --keys FILE to verify it)" in out  # without --keys, said so


def test_a_frame_the_gateway_refuses_is_named(capsys):
    frame = message.encode_data(KEY, "sew-07", 3, 1, 60000, [senml.record("t", 21.5, unit="degC")])
    rc, out, _ = decode(capsys, frame.hex())
    assert rc == 1 and "SenML: the gateway refuses this frame (payload): unit 'degC'" in out
    rc, out, _ = decode(capsys, FRAME.hex())
    assert rc == 0 and "SenML:" not in out


def test_garbage_is_one_line(capsys):
    rc, _, err = decode(capsys, "not a frame!")
    assert rc == 2 and err.strip() == "citynode decode: input is neither hex nor base64"
    rc, out, err = decode(capsys, "d18401")
    assert rc == 1 and err.startswith("citynode decode: not a valid frame") and err.count("\n") == 1


def test_a_bad_keys_file_is_one_line_and_exit_2(tmp_path, capsys):
    from protocol import message, senml
    from tools.cli import main

    frame = message.encode_data(bytes(16), "sew-07", 1, 0, 0, [senml.record("l", 0.5)]).hex()
    bad = tmp_path / "keys.toml"
    bad.write_text("[nodes.sew-07]\nkey = \"zz\"\n")
    for argv in (["decode", frame, "--keys", str(bad)], ["monitor", "--udp", "127.0.0.1:15685", "--keys", str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"citynode {argv[0]}: {bad}: [nodes.sew-07] key is not hex"], err


def test_hex_with_0x_and_base64_as_pasted_from_a_terminal(capsys):
    # 0x... is hex (not base64); base64 wrapped over lines or broken by spaces is still base64
    rc, out, _ = decode(capsys, "0x" + FRAME.hex())
    assert rc == 0 and "seq=1234" in out
    wrapped = base64.encodebytes(FRAME).decode()  # 76-character lines
    assert "\n" in wrapped.strip()
    rc, out, _ = decode(capsys, wrapped)
    assert rc == 0 and "seq=1234" in out
    spaced = " ".join(base64.b64encode(FRAME).decode()[i:i + 10] for i in range(0, 200, 10))
    rc, out, _ = decode(capsys, spaced)
    assert rc == 0 and "seq=1234" in out


def test_monitor_hex_lines_decode_back(tmp_path, capsys):
    # the line `citynode monitor --hex` prints under a frame is what decode takes
    import io

    from tools.monitor import FrameTable

    buf = io.StringIO()
    FrameTable(hex_frames=True, out=buf).frame(FRAME)
    line = [x for x in buf.getvalue().splitlines() if x.strip().startswith("hex ")]
    assert len(line) == 1
    rc, out, _ = decode(capsys, line[0].split("hex ", 1)[1])
    assert rc == 0 and "seq=1234" in out
