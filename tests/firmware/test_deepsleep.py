# Deep sleep: every wake proves the boot healthy (so deep-sleeping nodes never drift into
# safe mode), and what a wake needs comes back with it: sequence, uptime (SPEC section 8
# dates frames by it), time offset, storm and alarm hysteresis, rise rate, report state.
# The ESP32 keeps it in RTC memory (no flash write per wake); boards without it in state.json.
import json

from firmware import config
from firmware.node import Node, Reset
from firmware.sim.board import PowerCut, SimBoard
from firmware.sim.gateway import SimGateway
from firmware.sim.link import SimLink
from firmware.sim.world import VirtualClock, World
from protocol import message as msg
from tests.firmware.conftest import KEY, NODE

HOUR_MS = 3600 * 1000


def test_deep_sleep_node_survives_real_resets_without_safe_mode(rig):
    # on main 'unhealthy' was cleared only at a boot's 2nd cycle, which a deep-sleeping node
    # never reaches: from the 4th real reset on it sent the battery voltage only, forever
    r = rig({"sleep": "deep", "interval_s": 60, "heartbeat_s": 60})
    r.run(0.1)
    for _ in range(6):  # six power cuts, each at the next flash write
        r.board.cut_after = 0
        r.run(0.1)
    last = r.gw.decoded[-1]  # (the node itself is asleep at the end: r.node is None)
    assert last["boot"] == 7 and not last["flags"] & msg.F_SAFE
    assert any(rec[0] == "l" for rec in last["records"])
    assert not any(d["flags"] & msg.F_SAFE for d in r.gw.decoded)
    assert r.board.resets.count("deepsleep") >= 30


class UptimeClock:
    # the board's clock as on hardware: ticks_ms starts again at 0 after every reset and wake
    def __init__(self, world_clock):
        self.w = world_clock
        self.base = world_clock.ms()
        self._unix_offset = None

    def ms(self):
        return self.w.ms() - self.base

    def sleep_ms(self, ms):
        self.w.sleep_ms(ms)

    def set_time(self, unix_s):
        self._unix_offset = unix_s - self.ms() // 1000

    def time_s(self):
        return None if self._unix_offset is None else self._unix_offset + self.ms() // 1000

    def restart(self):
        self.base = self.w.ms()
        self._unix_offset = None

    def resume(self, ms, unix_offset=None):  # firmware.clock.Clock.resume
        self.base = self.w.ms() - ms
        self._unix_offset = unix_offset


class Esp32LikeBoard(SimBoard):
    # the sim board with an ESP32's RTC memory (kept through deep sleep, lost with the power)
    # and a clock that restarts at every boot
    def __init__(self, flash, **world):
        vc = VirtualClock()
        super().__init__(flash, world=World(vc, **world))
        self.clock = UptimeClock(vc)
        self.rtc = None
        self.state_writes = 0

    def rtc_memory(self, data=None):  # firmware/boards/esp32.py: machine.RTC().memory()
        if data is None:
            return self.rtc
        self.rtc = data

    def open(self, path, mode="r"):
        if "state" in path and "w" in mode:
            self.state_writes += 1
        return super().open(path, mode)

    def reset_cause(self):
        cause = super().reset_cause()
        if cause == "power_on":
            self.rtc = None
        self.clock.restart()
        return cause

    def deepsleep(self, ms):
        self.world.clock.sleep_ms(ms)
        self._mark("deepsleep")
        raise Reset("deepsleep")


def boots(board, cfg, link, hours):
    # firmware.sim.board.Runner, but its end in world time: the board's own clock restarts
    world = board.world.clock
    until = world.ms() + int(hours * HOUR_MS)
    node = None
    while world.ms() < until:
        node = Node(board, cfg, link)
        try:
            node.start()
            node.run(until_ms=board.clock.ms() + until - world.ms())
            return node
        except Reset:
            world.sleep_ms(200)  # boot time
        except PowerCut:
            world.sleep_ms(1000)
        node.uplink.buffer.close()
    return node


def run_esp32_like(tmp_path, hours, **world):
    cfg = config.validate({"node": NODE, "key": KEY.hex(), "sleep": "deep", "interval_s": 300,
                           "storm_interval_s": 60, "heartbeat_s": 300})
    board = Esp32LikeBoard(str(tmp_path / "flash"), **world)
    gw = SimGateway({NODE: KEY})
    link = SimLink(board.world, board.world.clock, gw)
    return board, gw, boots(board, cfg, link, hours), cfg, link


def test_a_wake_goes_on_with_the_boots_uptime_and_storm_state(tmp_path):
    board, gw, node, _, _ = run_esp32_like(tmp_path, 6, rain_start_s=3600)
    frames = [d for d in gw.decoded if d["boot"] == 1]
    assert board.resets.count("deepsleep") >= 60 and len(frames) == len(gw.decoded)
    ups = [d["uptime_ms"] for d in frames]
    # on main every wake started its uptime at 0 again: the gateway could not date the frames
    assert ups == sorted(ups) and len(set(ups)) == len(ups)
    assert ups[-1] >= 5 * HOUR_MS
    # storm mode with its hysteresis: on once and off once (on main it restarted at each wake)
    logs = board.logs
    assert sum("storm mode on" in x for x in logs) == 1 and sum("storm mode off" in x for x in logs) == 1
    assert sum("ALARM" in x for x in logs) == sum("alarm cleared" in x for x in logs) == 1
    storm = [bool(d["flags"] & msg.F_STORM) for d in frames]
    assert storm.count(True) >= 10 and storm[-1] is False
    # what the wakes need lives in RTC memory: state.json is written at boot and once more, not per wake
    assert board.state_writes <= 3, board.state_writes


def test_rtc_memory_lost_with_the_power_starts_a_new_boot(tmp_path):
    board, gw, node, cfg, link = run_esp32_like(tmp_path, 1)
    assert node.health.boot == 1
    board.cut_after = 0  # the power goes at the next flash write
    node = boots(board, cfg, link, 1)
    assert node.health.boot == 2 and node.seq > 0 and not node.health.safe
    seqs = sorted(d["seq"] for d in gw.decoded if d["boot"] == 2)
    assert seqs == list(range(len(seqs))) and seqs


def test_a_gateway_outage_does_not_keep_a_deep_sleeper_awake(rig):
    # A battery node on deep sleep and a 6-hour gateway outage. On main it slept only with an
    # empty buffer: it stayed awake (light sleep, radio on) the whole outage. Now it goes on
    # sleeping with its backlog in flash, probes once per wake, and drains when the link is back.
    r = rig({"sleep": "deep", "interval_s": 300, "heartbeat_s": 300}, outages=((3600, 7 * 3600),))
    r.run(1)
    before = r.board.resets.count("deepsleep")
    r.run(6)  # the outage
    wakes = r.board.resets.count("deepsleep") - before
    assert wakes >= 6 * 12 - 2, wakes  # one wake per interval, asleep in between
    r.run(2)  # the link is back
    seen = [(d["boot"], d["seq"]) for d in r.gw.decoded]
    assert len(seen) == len(set(seen))  # nothing twice
    boots = {b for b, _ in seen}
    assert boots == {1}
    assert sorted(s for _, s in seen) == list(range(max(s for _, s in seen) + 1))  # nothing lost
    assert any(d["flags"] & msg.F_BACKLOG for d in r.gw.decoded)


# state.json of a node asleep in a storm, as the firmware before named keeps wrote it (the
# wake as a positional list; made by running that firmware: boot 1, 58 frames sent, storm
# and alarm on, the wake due at 5,400,000 ms of uptime)
OLD_STATE = ('{"boot": 1, "unhealthy": 0, "resets": {"power_on": 1}, "sleeping": true, "wake": '
             '[1, 58, 0, 0, 5400000, null, true, true, 0, 203, 2101400, 5351400, false, 2750, 5351400, null]}')


def deep_cfg():
    return config.validate({"node": NODE, "key": KEY.hex(), "sleep": "deep", "interval_s": 300,
                            "storm_interval_s": 60, "heartbeat_s": 300})


def test_a_wake_kept_as_a_list_by_earlier_firmware_still_resumes(tmp_path):
    # a node updated while asleep: its next wake goes on with the same boot, sequence,
    # uptime and storm state, and keeps the next sleep by name
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "state.json").write_text(OLD_STATE)
    (flash / "_reset_cause").write_text("deepsleep")
    board = Esp32LikeBoard(str(flash))
    gw = SimGateway({NODE: KEY})
    node = Node(board, deep_cfg(), SimLink(board.world, board.world.clock, gw))
    node.start()
    assert node.health.boot == 1 and node.health.reset_cause == "deepsleep"
    assert node.seq == 58 and node.policy.storm and node.policy.alarm and node.policy.prev_level == 203
    assert node.sampler.reporter.last_value == 2750
    assert node.step() > 0
    d = gw.decoded[-1]
    assert (d["boot"], d["seq"]) == (1, 58) and d["uptime_ms"] >= 5400000 and d["flags"] & msg.F_STORM
    assert not any("storm mode on" in x for x in board.logs)  # resumed, not detected anew
    try:
        node.sleep(60000)
    except Reset:
        pass
    keep = json.loads(board.rtc)
    assert keep["boot"] == 1 and keep["seq"] == 59 and keep["storm"] is True and keep["uptime_ms"] >= 5460000


def test_a_board_without_rtc_memory_keeps_the_wake_by_name_in_state_json(rig):
    r = rig({"sleep": "deep", "interval_s": 300, "heartbeat_s": 300})
    r.run(0.5)
    with open(r.board.path("state.json")) as f:
        st = json.load(f)
    keep = st["wake"]
    assert st["sleeping"] is True and isinstance(keep, dict)
    assert keep["boot"] == 1 and keep["seq"] == len(r.gw.decoded) and keep["unhealthy"] == 0
    assert keep["storm"] is False and keep["offline"] is False


def test_the_rise_check_goes_on_across_a_wake(tmp_path):
    # A deep sleeper on a 30 s interval: a reading 20 mm up within the minute is noise until the
    # next one rises too (Policy.due: two readings in a row when they come < 60 s apart). Each
    # wake must keep when the last reading was and how many rose in a row: without them every
    # wake took its first rise alone for storm mode (a false storm from noise) and never
    # counted a second one.
    cfg = config.validate({"node": NODE, "key": KEY.hex(), "sleep": "deep", "interval_s": 30,
                           "storm_interval_s": 30, "heartbeat_s": 300})
    board = Esp32LikeBoard(str(tmp_path / "flash"))
    link = SimLink(board.world, board.world.clock, SimGateway({NODE: KEY}))

    def wake_and_read(level_mm):
        node = Node(board, cfg, link)
        node.start()
        node.policy.due(level_mm, board.clock.ms())
        return node

    def sleep(node):
        try:
            node.sleep(30000)
        except Reset:
            pass

    node = wake_and_read(500)  # the first reading: the reference
    sleep(node)
    node = wake_and_read(520)  # 20 mm in 30 s: one rise, not yet a storm
    assert node.health.reset_cause == "deepsleep" and not node.policy.storm and node.policy.ups == 1
    sleep(node)
    node = wake_and_read(545)  # a second rise in a row: storm mode
    assert node.policy.storm and sum("storm mode on" in x for x in board.logs) == 1
