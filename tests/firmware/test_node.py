# The sampling loop on the sim board against an in-process gateway: dry weather, storm
# and alarm, sensor faults, UART garbage, hours without a link, power cuts, watchdog,
# safe mode, commands, boot counter.
import pytest

from protocol import command
from protocol import message as msg
from tests.firmware.conftest import CMD_KEY, KEY, NODE


def contiguous(seqs):
    return seqs == list(range(len(seqs)))


def test_dry_weather_reports_on_change_and_heartbeat(rig):
    r = rig({"heartbeat_s": 3600, "sensors": {"level": {"delta_mm": 50}}}, dropout_p=0, spike_p=0)
    node = r.run(6)
    seqs = r.seqs(1)
    assert contiguous(seqs) and node.uplink.buffer.live == 0
    # every 5 min sampled, reported on a 50 mm change or hourly: far fewer than 72 frames
    assert 6 <= len(seqs) < 30
    first = r.gw.decoded[0]
    assert first["info"][msg.I_BOARD] == "sim" and first["info"][msg.I_RESET] == "power_on"
    assert first["info"][msg.I_INTERVAL] == 300
    assert first["info"][msg.I_LEVEL_MM] == [2200, 1200]  # the config's alarm and storm levels
    names = [rec[0] for rec in first["records"]]
    assert names == ["t", "h", "p", "l", "d", "b"]
    assert all(d["flags"] & (msg.F_STORM | msg.F_ALARM) == 0 for d in r.gw.decoded)
    assert not r.gw.rejects and r.gw.duplicates == 0


def test_a_provisioned_node_sends_one_frame_per_interval(rig, tmp_path):
    # the config `citynode provision` writes (no heartbeat_s): the first frame at boot, then one
    # every interval in dry weather, as the README says; a 10 s node does not come in bursts
    from tools import nodeconfig

    cfg = nodeconfig.build(NODE, KEY, board="sim", interval_s=10)
    assert "heartbeat_s" not in cfg
    r = rig({"interval_s": cfg["interval_s"], "storm_interval_s": 10}, dropout_p=0, spike_p=0)
    r.run(0.25)  # 15 minutes
    times = [d["uptime_ms"] for d in r.gw.decoded]
    assert times[0] < 10_000  # the first frame right after boot: data within seconds, not an hour
    assert len(times) == pytest.approx(90, abs=2)
    gaps = {b - a for a, b in zip(times, times[1:])}
    assert max(gaps) <= 11_000 and min(gaps) >= 9_000  # one per interval: no bursts, no silence


def test_storm_alarm_at_once_and_hysteresis(rig):
    r = rig(rain_start_s=3600)
    r.run(6)
    d = r.gw.decoded
    storm = [x for x in d if x["flags"] & msg.F_STORM]
    alarm = [x for x in d if x["flags"] & msg.F_ALARM]
    assert storm and alarm
    levels = r.values("l")
    assert max(levels) > 2.2
    # the first alarm frame follows the crossing at once, not at the next 5-minute report
    first_alarm = alarm[0]
    before = [x for x in d if x["uptime_ms"] < first_alarm["uptime_ms"]]
    assert first_alarm["uptime_ms"] - before[-1]["uptime_ms"] <= 31000
    # storm mode ends after the drain; the last frames are calm again
    assert not d[-1]["flags"] & msg.F_STORM
    gaps = [b["uptime_ms"] - a["uptime_ms"] for a, b in zip(storm, storm[1:], strict=False)]
    assert min(gaps) <= 30000
    # the blind zone near overflow reads as a clamped level with status "out of range"
    ranged = [x for x in d if any(q[2] == msg.Q_RANGE for q in x["quality"].values())]
    assert ranged and all(rec[2] == 2.75 for x in ranged for rec in x["records"] if rec[0] == "l")
    assert contiguous(r.seqs(1))


def test_six_hour_outage_loses_no_reading_with_512_slots(rig):
    r = rig({"buffer_slots": 512, "interval_s": 60, "heartbeat_s": 60}, outages=((1800, 1800 + 6 * 3600),))
    node = r.run(8)
    seqs = r.seqs(1)
    assert contiguous(seqs), "lost frames"
    assert node.uplink.buffer.live == 0 and node.uplink.buffer.counts["dropped"] == 0
    during = [x for x in r.gw.decoded if 1800 * 1000 + 10000 < x["uptime_ms"] < (1800 + 6 * 3600) * 1000]
    assert len(during) > 300  # one a minute for six hours, all delivered afterwards
    # frames made once the node noticed the outage (3 sends without an ACK) say "backlog"
    live = [x["seq"] for x in during if not x["flags"] & msg.F_BACKLOG]
    assert 1 <= len(live) <= 2 and live[0] == during[0]["seq"]
    assert "link down" in " ".join(node.board.logs)


def test_outage_longer_than_the_buffer_drops_oldest_and_counts(rig):
    r = rig({"buffer_slots": 16, "interval_s": 60, "heartbeat_s": 60}, outages=((600, 600 + 3600),))
    node = r.run(2)
    assert node.uplink.buffer.counts["dropped"] > 0
    assert node.uplink.buffer.live == 0
    seqs = r.seqs(1)
    assert len(seqs) + node.uplink.buffer.counts["dropped"] == node.seq


def test_missing_bme280_then_plugged_in(rig):
    r = rig(dropout_p=0)
    r.board.bme280.present = False
    r.run(0.5)
    assert r.values("t") == [] and r.values("l")  # level still reported (speed of sound at 20 °C)
    assert any("sensor bme280" in line for line in r.board.logs)
    r.board.bme280.present = True
    r.run(0.5)  # retried after 10 minutes
    assert r.values("t")


def test_bus_error_marks_fault_and_keeps_last_value(rig):
    r = rig({"interval_s": 60, "heartbeat_s": 60})
    r.run(0.1)
    r.board.bme280.fail_next = 1
    n = len(r.gw.decoded)
    r.run(0.02)
    faulty = [x for x in r.gw.decoded[n:] if 0 in x["quality"]]
    assert faulty and faulty[0]["quality"][0] == [1, 1, msg.Q_FAULT]
    assert faulty[0]["records"][0][2] == r.gw.decoded[n - 1]["records"][0][2]


def test_uart_garbage_and_dead_level_sensor(rig):
    r = rig({"interval_s": 60, "heartbeat_s": 60})
    r.board.ultrasonic.garbage_p = 0.4
    r.run(0.5)
    assert r.node.sampler.level.part.errors["junk"] > 0
    assert all(x["quality"].get(3, [0, 0, 0])[2] != msg.Q_FAULT for x in r.gw.decoded)
    r.board.ultrasonic.connected = False
    n = len(r.gw.decoded)
    r.run(0.1)
    late = r.gw.decoded[n:]
    assert late and all(x["quality"][3][2] == msg.Q_FAULT for x in late)


def test_power_cut_in_the_middle_of_a_buffer_write(rig):
    r = rig({"interval_s": 60, "heartbeat_s": 60}, outages=((0, 1800),))
    r.run(0.2)  # frames pile up in the buffer
    live = r.node.uplink.buffer.live
    assert live >= 5
    r.board.cut_after = 60  # the next flash write stops after 60 bytes
    r.run(0.1)
    assert r.board.cut_after is None
    r.run(1)
    node = r.node
    assert node.health.boot == 2
    assert node.uplink.buffer.counts["torn"] == 1
    assert node.uplink.buffer.live == 0
    # the torn slot was detected by its CRC and never sent; everything durable arrived
    assert not r.gw.rejects
    assert contiguous(r.seqs(1)[: live]) and len(r.seqs(1)) >= live


def test_watchdog_resets_a_hung_node(rig):
    r = rig({"watchdog_ms": 10000})
    r.run(0.05)
    real = r.board.ultrasonic.readinto

    def hang(buf):
        r.board.clock.sleep_ms(20000)  # a driver stuck longer than the watchdog allows
        r.board.ultrasonic.readinto = real
        return real(buf)

    r.board.ultrasonic.readinto = hang
    r.node.sampler.level.part.flush = lambda: None
    r.run(0.5)
    assert "watchdog" in r.board.resets
    boots = {d["boot"]: d for d in r.gw.decoded if d["info"]}
    assert boots[2]["info"][msg.I_RESET] == "watchdog"


def crash_the_sampler(monkeypatch):
    # a sensor driver bug: every cycle with sensors fails (monkeypatch.undo() mends it)
    import firmware.sampler as sampler

    def crash(self):
        raise RuntimeError("driver bug")

    monkeypatch.setattr(sampler.Sampler, "sample", crash)


def test_safe_mode_after_repeated_boot_failures(rig, monkeypatch):
    r = rig({"safe_after": 2})
    crash_the_sampler(monkeypatch)
    r.run(1)
    monkeypatch.undo()
    node = r.node
    assert node.health.safe and node.health.boot >= 3
    safe = [x for x in r.gw.decoded if x["flags"] & msg.F_SAFE]
    assert safe and safe[0]["records"][0][0] == "b"
    assert node.counts["loop_errors"] == 0  # safe mode runs no sensor code


def test_power_cuts_before_a_boot_proved_healthy_are_no_failures(rig):
    # brown-outs at dusk (a solar node): eight boots in a row cut by the power within minutes,
    # each reported as power_on. On main every one counted as failed: safe mode from the 4th.
    r = rig({"safe_after": 3})
    for _ in range(8):
        r.run(0.05)  # one cycle, not yet healthy (HEALTHY_MS)
        r.runner.node.uplink.buffer.close()
        r.runner.node = None  # the power is gone: RAM lost, flash kept; the next boot says power_on
        r.board.clock.sleep_ms(60000)
    node = r.run(1)
    assert node.health.boot == 9 and node.health.reset_cause == "power_on" and not node.health.safe
    assert not any(d["flags"] & msg.F_SAFE for d in r.gw.decoded)
    assert node.health.unhealthy == 0  # healthy now: up 10 min with frames acknowledged


def test_safe_mode_tries_normal_mode_again_with_a_backoff(rig, monkeypatch):
    # a sensor driver that crashes the cycle: safe mode; after 6 healthy hours there the node
    # tries normal mode (it still crashes: safe again), then after 12 more hours, and when the
    # fault is gone it stays in normal mode. On main safe mode lasted until someone reset it.
    r = rig({"safe_after": 2})
    crash_the_sampler(monkeypatch)
    r.run(20)
    monkeypatch.undo()
    retries = [i for i, c in enumerate(r.board.resets) if c == "soft"]
    safe_boots = sorted({d["boot"] for d in r.gw.decoded if d["flags"] & msg.F_SAFE})
    tries = [line for line in r.board.logs if "trying normal mode" in line]
    assert len(tries) == 2, tries  # at ~6 h and ~6 + 12 h (+ the failing tries themselves)
    assert len(safe_boots) >= 3 and retries
    r.run(30)  # the fault is gone (a new driver, the sensor replaced): the next try sticks
    node = r.node
    assert not node.health.safe and node.health.unhealthy == 0 and node.health.state.data.get("safe_tries", 0) == 0
    assert node.health.reset_cause == "safe_retry"
    assert any(rec[0] == "l" for rec in r.gw.decoded[-1]["records"])


def test_commands_applied_acknowledged_and_replays_ignored(rig):
    r = rig({"interval_s": 300, "heartbeat_s": 300})
    r.run(0.1)
    r.gw.commands += [(NODE, "interval", 60), (NODE, "thresholds", {"alarm_m": 0.1, "storm_m": 0.05}),
                      (NODE, "time", 1_800_000_000), (NODE, "interval", 0)]
    r.run(1)
    node = r.node
    assert node.policy.interval_ms == 60000 and node.policy.alarm_mm == 100 and node.policy.storm_mm == 50
    results = [x["cmd_result"] for x in r.gw.decoded if x["cmd_result"]]
    assert results == [[1, 0], [2, 0], [3, 0], [4, command.OUT_OF_RANGE]]
    # the new thresholds go out in the info of the frame that reports the command
    th_frame = [x for x in r.gw.decoded if x["cmd_result"] == [2, 0]][0]
    assert th_frame["info"][msg.I_LEVEL_MM] == [100, 50]
    assert any(x["time"] and x["time"] >= 1_800_000_000 for x in r.gw.decoded)
    assert any(x["flags"] & msg.F_ALARM for x in r.gw.decoded)  # the new 0.1 m alarm threshold
    assert node.counts["cmd_refused"] == 1 and node.last_cmd_id == 3
    # a replayed command, another boot's command, and a command MACed with a wrong key are not applied
    before = node.counts["cmd_ignored"]
    boot = node.health.boot
    node.receive([msg.encode_signed(KEY, NODE, boot, 2, command.sign(CMD_KEY, NODE, boot, 2, "interval", 10)),
                  msg.encode_signed(KEY, NODE, boot + 5, 99, command.sign(CMD_KEY, NODE, boot + 5, 99,
                                                                          "interval", 10)),
                  msg.encode_cmd(bytes(16), NODE, boot, 100, "interval", 10)])
    assert node.counts["cmd_ignored"] == before + 1 and node.uplink.rejects == {"mac": 1}
    assert node.cmd_result == [2, command.REPLAY]
    assert node.policy.interval_ms == 60000
    # what the gateway set survives a reset
    r.runner.node = None
    r.run(0.1)
    assert r.node.health.boot == node.health.boot + 1
    assert r.node.policy.interval_ms == 60000 and r.node.policy.alarm_mm == 100 and r.node.policy.storm_mm == 50
    first = [x for x in r.gw.decoded if x["boot"] == r.node.health.boot][0]
    assert first["info"][msg.I_INTERVAL] == 60
    # a newly flashed config with other values wins over what the gateway set
    from firmware import config

    r.runner.cfg = config.validate({"node": NODE, "key": KEY.hex(), "command_key": CMD_KEY.hex(), "interval_s": 600,
                                    "storm_interval_s": 30})
    r.runner.node = None
    r.run(0.1)
    assert r.node.policy.interval_ms == 600000 and r.node.policy.alarm_mm == 2200


def test_reboot_command_and_boot_counter(rig):
    r = rig()
    r.run(0.1)
    r.gw.commands.append((NODE, "reboot", None))
    r.run(1.5)  # delivered with the reply to the next frame (hourly heartbeat at the latest)
    assert r.node.health.boot == 2
    assert [1, 0] in [x["cmd_result"] for x in r.gw.decoded if x["boot"] == 1]
    info = [x["info"] for x in r.gw.decoded if x["boot"] == 2 and x["info"]]
    assert info[0][msg.I_RESET] == "command"
    # a power cycle later: a fresh rig on the same flash continues counting
    r2 = type(r)(r.board.flash_dir, None)
    r2.run(0.05)
    assert r2.node.health.boot == 3


def test_deep_sleep_keeps_the_boot_and_sequence(rig):
    r = rig({"sleep": "deep", "interval_s": 60, "heartbeat_s": 60})
    r.run(0.5)
    assert r.board.resets.count("deepsleep") >= 20
    assert {d["boot"] for d in r.gw.decoded} == {1}
    assert contiguous(r.seqs(1))


def test_level_filters_from_config_smooth_and_clamp(rig):
    r = rig({"interval_s": 60, "heartbeat_s": 60, "sensors": {"level": {"ema_alpha": 0.2, "clamp_mm": [2700, 2800]}}})
    r.run(0.4)
    # dry weather: the water is ~2.82 m below the sensor; clamped to 2.8 m, the level reads
    # 0.2 m with status "out of range"
    assert all(v == pytest.approx(0.2) for v in r.values("l"))
    assert all(x["quality"][3][2] == msg.Q_RANGE for x in r.gw.decoded)
    assert r.node.sampler.ema.alpha == 0.2


def test_power_cuts_while_the_boot_counter_is_written_never_reuse_a_sent_boot(rig):
    r = rig({"interval_s": 60, "heartbeat_s": 60})
    r.run(0.05)
    for cut in (0, 3, 9, 17, 30, 60):
        r.board.cut_after = cut  # the next flash write (the state file at boot, or a slot) stops here
        r.runner.node = None if cut % 2 else r.runner.node  # half of them: cut during the next boot
        r.run(0.05)
    boots = [d["boot"] for d in r.gw.decoded]
    assert boots == sorted(boots)  # frames of a later boot never carry an earlier boot number
    per_boot = {}
    for d in r.gw.decoded:
        per_boot.setdefault(d["boot"], []).append(d["seq"])
    assert all(s == list(range(len(s))) for s in per_boot.values())
    assert r.node.health.boot >= 4


def test_boot_behind_moves_the_counter_and_renumbers_only_the_named_frames(tmp_path):
    # SPEC.md 6.5 on the node: a gateway that has seen boot 6 refuses every frame of boots
    # below 7 with a boot-behind message; the node moves to boot 7 (on flash first) and sends
    # each refused frame again, renumbered, with its readings unchanged. Messages it must not
    # act on: a frame it does not hold, and one MACed with another key.
    from firmware import config
    from firmware.node import Node
    from firmware.sim.board import SimBoard
    from firmware.sim.link import SimLink

    taken = []
    heard = {}  # (boot, seq) -> the frame, decoded

    def gateway(m):
        d = msg.decode(m, {NODE: KEY}.get)
        heard.setdefault((d["boot"], d["seq"]), d)
        if node.counts["frames"] < 3:
            return []  # not answering yet: the node comes to hold three frames of boot 1
        if d["boot"] < 7:
            return [msg.encode_boot(bytes(16), NODE, d["boot"], d["seq"], 9),  # forged: wrong key
                    msg.encode_boot(KEY, NODE, d["boot"], 99, 9),  # a frame the node does not hold
                    msg.encode_boot(KEY, NODE, d["boot"], d["seq"], 7)]
        taken.append(d)
        return [msg.encode_ack(KEY, NODE, d["boot"], d["seq"])]

    cfg = config.validate({"node": NODE, "key": KEY.hex(), "interval_s": 60})
    board = SimBoard(str(tmp_path / "flash"))
    node = Node(board, cfg, reporting(SimLink(board.world, board.clock, gateway)))
    node.start()
    assert node.health.boot == 1
    for _ in range(4):
        node.sleep(node.step())
    assert node.health.boot == 7 and node.uplink.buffer.live == 0
    first_life = [heard[(1, s)] for s in range(3)]
    assert [(d["boot"], d["seq"]) for d in taken] == [(7, 0), (7, 1), (7, 2), (7, 3)]
    assert node.counts["renumbered"] == 3 and node.uplink.rejects == {"mac": 3}
    for old, new in zip(first_life, taken[:3]):  # the same readings, times and flags
        assert {k: v for k, v in old.items() if k not in ("boot", "seq")} == \
            {k: v for k, v in new.items() if k not in ("boot", "seq")}
    node.uplink.buffer.close()
    again = Node(board, cfg, SimLink(board.world, board.clock, gateway))
    again.start()
    assert again.health.boot == 8  # the moved counter was on flash
    again.uplink.buffer.close()


def test_a_rekeyed_node_names_its_key_version_and_discards_only_what_the_gateway_retired(tmp_path):
    # SPEC.md 4.5 and 6.6 on the node: three frames buffered under key version 0, then a re-key
    # (config with a new key, version 1) and a reboot. A gateway that no longer holds version 0
    # answers each old frame with a retired message: the node drops exactly those, counts them,
    # says so, and reports the count in its next info; its new frames carry version 1 and are
    # taken. A retired message for a frame MACed with the current key, or MACed with the old
    # key, changes nothing.
    from firmware import config
    from firmware.node import Node
    from firmware.sim.board import SimBoard
    from firmware.sim.link import SimLink
    from protocol import keyring

    new_key = bytes(range(50, 66))
    taken = []

    def silent(m):
        return []

    cfg = config.validate({"node": NODE, "key": KEY.hex(), "interval_s": 60})
    board = SimBoard(str(tmp_path / "flash"))
    node = Node(board, cfg, reporting(SimLink(board.world, board.clock, silent)))
    node.start()
    for _ in range(3):
        node.sleep(node.step())
    assert node.uplink.buffer.live == 3
    node.uplink.buffer.close()

    def gateway(m):
        kv = keyring.frame_key_version(m)
        d = msg.decode(m, {NODE: KEY if kv == 0 else new_key}.get)
        if kv == 0:
            return [keyring.encode_retired(KEY, NODE, d["boot"], d["seq"], 1),  # MACed with the old key
                    keyring.encode_retired(new_key, NODE, d["boot"], d["seq"], 1)]
        taken.append(d)
        return [keyring.encode_retired(new_key, NODE, d["boot"], d["seq"], 1),  # its current key: kept
                msg.encode_ack(new_key, NODE, d["boot"], d["seq"])]

    cfg = config.validate({"node": NODE, "key": new_key.hex(), "key_version": 1, "interval_s": 60})
    node = Node(board, cfg, reporting(SimLink(board.world, board.clock, gateway)))
    node.start()
    for _ in range(3):
        node.sleep(node.step())
    assert node.uplink.buffer.live == 0, (node.counts, node.uplink.rejects, board.logs)
    assert node.counts["discarded"] == 3 and node.uplink.rejects == {"mac": 3}
    assert [(d["boot"], d["seq"]) for d in taken] == [(2, 0), (2, 1), (2, 2)]
    assert taken[1]["info"][6] == 3  # the count goes to the gateway after the discards
    assert any("discarded boot 1 seq 2: old key, gateway has v1 (3)" in line for line in board.logs)
    node.uplink.buffer.close()


def test_health_rides_in_the_boot_frame_and_then_hourly(rig):
    # SPEC 6.1 info 7-11: buffer use, flash errors, resets by cause, time in safe mode (the
    # heap only on MicroPython: the CPython sim has none to report)
    r = rig({"interval_s": 300, "heartbeat_s": 300}, outages=((1800, 3 * 3600),))
    r.run(4)
    health = [d for d in r.gw.decoded if msg.I_BUFFER in d["info"]]
    first = health[0]
    assert first["seq"] == 0 and first["info"][msg.I_RESETS] == {"power_on": 1}
    assert first["info"][msg.I_FLASH_ERRORS] == 0 and first["info"][msg.I_SAFE_S] == 0
    gaps = [b["uptime_ms"] - a["uptime_ms"] for a, b in zip(health, health[1:], strict=False)]
    assert len(health) >= 4 and max(gaps) <= 3600000 + 300000, gaps
    # made during the outage, it tells of the frames waiting in flash, bytes included
    waiting = [d["info"][msg.I_BUFFER] for d in health if d["flags"] & msg.F_BACKLOG]
    assert waiting and all(frames >= 1 and nbytes >= 50 * frames for frames, nbytes, _torn, _dropped in waiting)


def test_the_cadence_holds_across_the_ticks_wrap(rig):
    # the node times its cycles in ticks (ms modulo 2**30, as the ports give them): 12.4 days
    # up, they wrap; the 5-minute cadence, the heartbeat and the rise rate go on as before
    r = rig({"interval_s": 300, "heartbeat_s": 300})
    r.board.clock.now_ms = (1 << 30) - 30 * 60000  # half an hour before the wrap
    r.run(1)
    ups = [d["uptime_ms"] for d in r.gw.decoded]
    gaps = [b - a for a, b in zip(ups, ups[1:], strict=False)]
    assert len(ups) >= 12 and ups[-1] > (1 << 30) + 20 * 60000
    assert all(299000 <= g <= 301000 for g in gaps), gaps


def reporting(link):
    # a link paced for a frame every cycle (firmware/uplink.py Pace), on the sim board's clock
    from firmware.uplink import Pace

    link.pace = Pace(link.clock, report=True)
    return link
