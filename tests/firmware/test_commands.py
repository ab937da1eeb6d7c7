# Commands on the node (SPEC.md 6.6): only the operator's signed commands, for this node and
# this boot, each once, with arguments inside the node's configured bounds; each refusal has
# its own result code in cmd_result and is counted.
import os

import pytest

from protocol import command as C
from protocol import message as msg
from tests.firmware.conftest import CMD_KEY, KEY, NODE


def relay(node, token, boot=None, cmd_id=None):
    # what the gateway does with a signed command: MAC it for the boot it last heard
    if cmd_id is None:
        cmd_id = C.peek(token)[1]["counter"]
    return msg.encode_signed(KEY, NODE, node.health.boot if boot is None else boot, cmd_id, token)


def signed(node, counter, op, arg=None, key=CMD_KEY, to=NODE, boot=None):
    return C.sign(key, to, node.health.boot if boot is None else boot, counter, op, arg)


def booted(rig, cfg=None):
    r = rig(cfg)
    r.run(0.05)
    return r, r.node


@pytest.mark.parametrize("make, status", [
    (lambda n: msg.encode_cmd(KEY, NODE, n.health.boot, 7, "interval", 60), C.UNSIGNED),  # the gateway's own command
    (lambda n: relay(n, signed(n, 7, "interval", 60, key=KEY)), C.BAD_SIGNATURE),  # signed with the gateway's key
    (lambda n: relay(n, signed(n, 7, "interval", 60, to="sew-08")), C.OTHER_NODE),
    (lambda n: relay(n, signed(n, 7, "interval", 60, boot=n.health.boot + 1)), C.OTHER_BOOT),
    (lambda n: relay(n, signed(n, 7, "interval", 86401)), C.OUT_OF_RANGE),
    (lambda n: relay(n, signed(n, 7, "interval", "60")), C.BAD_ARG),
    (lambda n: relay(n, signed(n, 7, "selfdestruct")), C.UNKNOWN_OP),
    (lambda n: relay(n, signed(n, 7, "thresholds", {"alarm_m": 3.5})), C.BEYOND_DEPTH),  # mount_mm 3000
    (lambda n: relay(n, signed(n, 7, "thresholds", {"alarm_m": -1})), C.OUT_OF_RANGE),
    (lambda n: relay(n, signed(n, 7, "thresholds", {"overflow_m": 1})), C.BAD_ARG),
    (lambda n: relay(n, signed(n, 7, "reboot", 1)), C.BAD_ARG),
    (lambda n: relay(n, signed(n, 7, "time", 0)), C.OUT_OF_RANGE),
    (lambda n: relay(n, b"\xa0", cmd_id=7), C.MALFORMED),
])
def test_refused_commands_change_nothing_and_say_why(rig, make, status):
    r, node = booted(rig)
    p = node.policy
    before = (p.interval_ms, p.alarm_mm, p.storm_mm, node.reboot_pending, node.last_cmd_id)
    node.receive([make(node)])
    assert node.cmd_result == [7, status]
    assert (p.interval_ms, p.alarm_mm, p.storm_mm, node.reboot_pending, node.last_cmd_id) == before
    assert node.counts["cmd_refused"] == 1
    # reported in the next data frame (a result waiting makes the cycle report)
    node.step()
    assert any(d["cmd_result"] == [7, status] for d in r.gw.decoded)


def test_time_step_beyond_the_configured_limit_is_refused(rig):
    r, node = booted(rig, {"time_step_max_s": 600})
    node.receive([relay(node, signed(node, 1, "time", 1_800_000_000))])  # no time yet: taken
    assert node.cmd_result == [1, C.APPLIED]
    now = node.board.clock.time_s()
    node.receive([relay(node, signed(node, 2, "time", now + 20 * 3600))])  # 20 h ahead
    assert node.cmd_result == [2, C.TIME_STEP] and node.board.clock.time_s() - now < 5
    node.receive([relay(node, signed(node, 3, "time", now + 300))])
    assert node.cmd_result == [3, C.APPLIED]


def test_each_command_once_in_the_same_boot_and_after_a_reset(rig):
    r, node = booted(rig)
    token = signed(node, 5, "interval", 60)
    node.receive([relay(node, token)])
    assert node.cmd_result == [5, C.APPLIED] and node.policy.interval_ms == 60000
    # the gateway's resend of the same command: counted, not reported, not applied again
    node.cmd_result = None
    node.receive([relay(node, token)])
    assert node.cmd_result is None and node.counts["cmd_ignored"] == 1 and node.last_cmd_id == 5
    # an older command of the same boot, never delivered: refused
    node.receive([relay(node, signed(node, 4, "interval", 120))])
    assert node.cmd_result == [4, C.REPLAY] and node.policy.interval_ms == 60000
    # after a reset: the same boot's command is refused (the boot moved on)
    old_boot = node.health.boot
    r.runner.node = None
    r.run(0.05)
    node = r.node
    assert node.health.boot == old_boot + 1 and node.last_cmd_id == 5
    node.receive([relay(node, token, boot=node.health.boot)])
    assert node.cmd_result == [5, C.OTHER_BOOT]
    # a command signed for this boot with an old counter: refused, the counter is on flash
    node.receive([relay(node, signed(node, 3, "interval", 30))])
    assert node.cmd_result == [3, C.REPLAY] and node.policy.interval_ms == 60000


def test_wiped_flash_keeps_the_operators_floor(rig, tmp_path):
    # A wiped node starts at boot 1 with no state. Its new config carries the operator's counter
    # at provisioning (cmd_floor): every command signed before it is refused, even for boot 1.
    r, node = booted(rig, {"cmd_floor": 1000})
    assert node.health.boot == 1 and node.last_cmd_id == 1000
    node.receive([relay(node, signed(node, 999, "interval", 60))])
    assert node.cmd_result == [999, C.REPLAY] and node.policy.interval_ms == 300000
    node.receive([relay(node, signed(node, 1001, "interval", 60))])
    assert node.cmd_result == [1001, C.APPLIED] and node.policy.interval_ms == 60000
    # wipe the state: the boot starts again, the floor stays
    os.remove(os.path.join(r.board.flash_dir, "state.json"))
    r.runner.node = None
    r.run(0.05)
    assert r.node.last_cmd_id == 1000


def test_a_node_without_command_key_takes_no_command(rig):
    from firmware import config

    r = rig()
    r.runner.cfg = config.validate({"node": NODE, "key": KEY.hex()})
    r.run(0.05)
    node = r.node
    node.receive([relay(node, signed(node, 1, "interval", 60))])
    assert node.cmd_result == [1, C.NO_KEY] and node.policy.interval_ms == 300000


def test_command_key_equal_to_the_key_is_a_config_error():
    from firmware import config

    with pytest.raises(config.ConfigError, match="command_key"):
        config.validate({"node": NODE, "key": KEY.hex(), "command_key": KEY.hex()})


@pytest.mark.parametrize("interval", [0, 1, msg.INTERVAL_MAX, msg.INTERVAL_MAX + 1])
def test_a_config_and_a_command_take_the_same_intervals(interval):
    # the range is protocol.message's (issue 20 item 3): the node's config, `citynode provision`
    # (which runs it) and the command checker accept the same values
    from firmware import config

    cfg = {"node": NODE, "key": KEY.hex(), "interval_s": interval, "storm_interval_s": 1}
    try:
        config.validate(cfg)
        in_config = True
    except config.ConfigError:
        in_config = False
    assert in_config == (C.check("interval", interval) == C.APPLIED) == (1 <= interval <= 86400)


@pytest.mark.parametrize("mm", [0, msg.THRESHOLD_MAX, msg.THRESHOLD_MAX + 1])
def test_a_config_and_a_command_take_the_same_thresholds(mm):
    from firmware import config

    th = {"alarm_mm": mm, "storm_mm": 0, "rise_mm_min": mm}
    try:
        config.validate({"node": NODE, "key": KEY.hex(), "thresholds": th})
        in_config = True
    except config.ConfigError:
        in_config = False
    by_command = C.check("thresholds", {"alarm_m": mm / 1000, "rise_mm_min": mm}) == C.APPLIED
    assert in_config == by_command == (mm <= 100000)


def test_a_compact_command_works_relayed_on_any_link_and_unverified_ones_stay_quiet(rig):
    # SPEC.md 13.6: the compact form relayed in a type 3 message (UDP, serial) is taken like the full one
    r, node = booted(rig)
    node.receive([relay(node, C.sign_compact(CMD_KEY, NODE, node.health.boot, 9, "thresholds",
                                             {"alarm_m": 1.25, "rise_mm_min": 40}))])
    assert node.cmd_result == [9, C.APPLIED] and node.policy.alarm_mm == 1250 and node.policy.rise_mm_min == 40
    node.step()
    # as the LoRa link hands it over (no gateway MAC around it): one that does not verify is
    # counted and logged, never reported; a verified refusal waits for the next due frame
    forged = C.sign_compact(KEY, NODE, node.health.boot, 10, "reboot")
    node.receive([{"type": "cmd", "boot": None, "cmd_id": None, "signed": forged}])
    assert node.cmd_result is None and node.counts["cmd_refused"] == 1 and not node.reboot_pending
    old = C.sign_compact(CMD_KEY, NODE, node.health.boot, 8, "reboot")
    node.receive([{"type": "cmd", "boot": None, "cmd_id": None, "signed": old}])
    assert node.cmd_result == [8, C.REPLAY] and node.cmd_quiet and not node.reboot_pending
