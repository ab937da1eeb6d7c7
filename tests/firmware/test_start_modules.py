# What a node loads at start is what its config uses (issue 21 item 8: the heap is a byte
# budget measured on the emulated Pico, hil_tests/test_port.py). Here, on the real MicroPython
# VM, a node is started as firmware/main.py starts it (its config checked, the board its
# config names, Node(), start()) and the modules it loaded are listed: a driver only for a
# configured sensor, the Wi-Fi keeper only for a UDP link, the LoRa link and its radio table
# only for LoRa, and the config checks gone again once the config passed.
import json

import pytest

from tests.support import mpvm

KEY = "00" * 16

# the unix port's machine module has no WDT, reset cause or pins: the few the rp2 board
# touches at start (firmware/boards/rp2.py; no sensor part is opened before the first cycle)
START = """
import sys
class WDT:
    def __init__(self, timeout=0):
        pass
    def feed(self):
        pass
class Machine:
    PWRON_RESET = 1
    WDT_RESET = 3
    WDT = WDT
    mem32 = {}
    def reset_cause(self):
        return 1
sys.modules['machine'] = Machine()
from firmware import load_config
from firmware import main as entry
from firmware.node import Node
root = %r
cfg = load_config(root)
node = Node(entry.make_board(cfg['board'], root), cfg)
node.start()
print('MODULES', ' '.join(sorted(sys.modules)))
"""

NEVER_WITHOUT_USE = ("firmware.config", "firmware.boards.wifi", "firmware.lora_link", "firmware.lora_radios",
                     "firmware.modem", "firmware.commands", "firmware.dns", "protocol.compact", "protocol.command")


def started_modules(tmp_path, **raw):
    (tmp_path / "config.json").write_text(json.dumps(dict({"node": "sew-1", "key": KEY, "board": "rp2"}, **raw)))
    out = mpvm.run(START % str(tmp_path)).stdout
    line = [x for x in out.splitlines() if x.startswith("MODULES ")]
    assert line, out
    return set(line[0].split()[1:])


@pytest.mark.micropython
@pytest.mark.parametrize("raw,drivers", [
    ({}, {"bme280", "a02yyuw"}),  # the default slots, on the USB console
    ({"sensors": [{"kind": "hydrostatic"}, {"kind": "tipping_bucket", "pin": 22}], "sleep": "none"},
     {"hydrostatic", "tipping_bucket"}),
])
def test_a_node_loads_only_what_its_config_uses(tmp_path, raw, drivers):
    # on main the config checks (firmware/config.py, ~6 KB on a board) stayed in the heap for
    # good, and every MicroPython board loaded the Wi-Fi keeper whatever its link
    mods = started_modules(tmp_path, **raw)
    assert "firmware.node" in mods and "firmware.boards.rp2" in mods and "firmware.links" in mods
    assert {m[len("firmware.drivers."):] for m in mods if m.startswith("firmware.drivers.")} == drivers
    assert not mods & set(NEVER_WITHOUT_USE), sorted(mods & set(NEVER_WITHOUT_USE))
