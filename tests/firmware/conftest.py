# Helpers for firmware tests: a sim board with an in-process gateway behind a SimLink.
import pytest

from firmware import config
from firmware.sim.board import Runner, SimBoard
from firmware.sim.gateway import SimGateway
from firmware.sim.link import SimLink

KEY = bytes(range(16))
CMD_KEY = bytes(range(100, 132))  # the operator's command key (SPEC 6.6)
NODE = "sew-07"
HOUR_MS = 3600 * 1000


class Rig:
    def __init__(self, flash, cfg_over=None, **world):
        raw = {"node": NODE, "key": KEY.hex(), "command_key": CMD_KEY.hex(), "interval_s": 300,
               "storm_interval_s": 30}
        raw.update(cfg_over or {})
        self.cfg = config.validate(raw)
        self.gw = SimGateway({NODE: KEY}, command_keys={NODE: CMD_KEY})
        self.board = SimBoard(str(flash), **world)
        self.link = SimLink(self.board.world, self.board.clock, self.gw)
        self.runner = Runner(self.board, self.cfg, self.link)

    def run(self, hours):
        until = self.board.clock.ms() + int(hours * HOUR_MS)
        self.node = self.runner.run(until)
        return self.node

    def seqs(self, boot=None):
        return sorted(d["seq"] for d in self.gw.decoded if boot is None or d["boot"] == boot)

    def values(self, name):
        out = []
        for d in self.gw.decoded:
            for r in d["records"]:
                if r[0] == name:
                    out.append(r[2])
        return out


@pytest.fixture
def rig(tmp_path):
    def make(cfg_over=None, **world):
        return Rig(tmp_path / "flash", cfg_over, **world)

    return make
