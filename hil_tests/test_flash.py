# Provision a new node and flash it with `citynode flash`: the upload is verified by sha256
# on the board, the board reboots into the new firmware and sends frames under the new key.
import re

import serial

from hil_tests.conftest import flash_board
from protocol import cobs, message
from tools.provision import provision


def test_provision_flash_and_reboot_into_the_new_firmware(request, board_kind, blank_rig, tmp_path):
    board = "rp2" if board_kind == "pico" else "sim"
    cfg_path, cfg = provision("hil-new", str(tmp_path / "node"), str(tmp_path / "keys.toml"), board=board,
                              interval_s=2)
    code, out, err = flash_board(blank_rig.port, tmp_path / "node")
    assert code == 0, err[-2000:]
    assert "sha256 ok" in err
    m = re.search(r"(\d+) files written, (\d+) verified by sha256; node hil-new runs citynode \S+, boot (\d+)",
                  out)
    assert m and int(m.group(1)) == int(m.group(2)) > 10, out
    if board_kind == "pico":
        # the files went into LittleFS on the chip's NOR flash through the boot ROM's erase and
        # program routines (one soft reset, no power cycle)
        from tools.upload import build_bundle

        wear = blank_rig.report()
        files = build_bundle(cfg)
        size = sum(len(data) for _, data in files)
        assert wear["boots"] == 1 and wear["program_bytes"] >= size, wear
        assert wear["erases"] * 4096 >= size, wear  # LittleFS erases a block before it programs it
    else:
        assert blank_rig.boots >= 2  # powered on blank, then soft-reset into the new firmware
    # the new firmware runs with the new key: its frames verify, on the same boot the flash saw
    key = bytes.fromhex(cfg["key"])
    deframer = cobs.Deframer()
    with serial.Serial(blank_rig.port, 115200, timeout=0.2) as port:
        for _ in range(60):
            frames = [b for kind, b in deframer.feed(port.read(4096)) if kind == "frame"]
            if frames:
                d = message.decode(frames[0], {"hil-new": key}.get)
                assert d["boot"] == int(m.group(3))
                break
        else:
            raise AssertionError("no frame from the freshly flashed node")
