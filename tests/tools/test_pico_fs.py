# The emulated Pico's filesystem from the host (tools/rig/pico_fs.py): frames preloaded into
# a flash image are the node's buffer as the firmware reads it, signed with the node's key,
# after what the board's own boots left. No emulator runs here (hil_tests/test_port.py boots
# the real rp2 port on such an image).
import json

import pytest

from firmware import config
from firmware.buffer import Buffer
from protocol import message
from tests.firmware.test_buffer_flash import contents
from tools.provision import provision
from tools.rig import pico_fs


def flash_image(tmp_path, cfg, boot=3):
    # a 2 MB flash file whose LittleFS region holds what `citynode flash` and a first boot leave
    fs = pico_fs.littlefs(mount=True)
    with fs.open("/config.json", "w") as f:
        f.write(json.dumps(cfg))
    with fs.open("/state.json", "w") as f:
        f.write(json.dumps({"boot": boot, "unhealthy": 0}))
    path = tmp_path / "pico-flash.bin"
    path.write_bytes(bytes(b"\xff" * pico_fs.OFFSET) + bytes(fs.context.buffer))
    return path


def test_preloaded_frames_are_the_nodes_buffer(tmp_path):
    _path, raw = provision("pf-1", str(tmp_path / "node"), str(tmp_path / "keys.toml"), board="rp2")
    image = flash_image(tmp_path, raw)
    cfg = config.validate(raw)
    with pico_fs.mounted(image) as fs:  # a frame the board's own boot left unanswered
        buf = Buffer("/buffer.bin", cfg["buffer_slots"], cfg["slot_bytes"], fs.open, fs=fs)
        buf.put(3, 0, b"left by the board")
    assert pico_fs.preload_backlog(image, 40) == {"live": 40, "boot": 3}
    assert image.stat().st_size == pico_fs.FLASH_BYTES
    with pico_fs.mounted(image) as fs:
        buf = Buffer("/buffer.bin", cfg["buffer_slots"], cfg["slot_bytes"], fs.open, fs=fs)
        assert buf.live == 40 and buf.counts["torn"] == 0
        frames = contents(buf)  # oldest first
    assert list(frames) == [(3, s) for s in range(40)]
    assert frames[(3, 0)] == b"left by the board"
    for (boot, seq), frame in list(frames.items())[1:]:
        d = message.decode(frame, {"pf-1": cfg["key_bytes"]}.get)  # raises on a bad MAC
        assert (d["boot"], d["seq"]) == (boot, seq) and len(d["records"]) == 6


def test_an_image_that_is_no_pico_flash_is_refused(tmp_path):
    bad = tmp_path / "short.bin"
    bad.write_bytes(b"\xff" * 4096)
    with pytest.raises(ValueError, match="not a Pico's 2 MB flash"), pico_fs.mounted(bad):
        pass
