# The node's LoRa link (firmware/lora_link.py) on the simulated air (tools/rig/lora_air.py) in
# virtual time: the firmware's own Node on sim boards, a gateway radio that ACKs compact and
# cumulative under its own duty cycle. The air counts every packet's airtime; the tests
# assert the EU868 1 % over every sliding hour, and that every frame arrives exactly once.
from firmware import config
from firmware.lora_link import LoraLink
from firmware.sim.board import Runner, SimBoard
from firmware.sim.gateway import SimGateway
from protocol import message as msg
from tools.rig.lora_air import Air, SimModem, SimTime, sim_gateway_actor

HOUR_MS = 3600 * 1000


def keyed(i):
    return "sew-%02d" % i, bytes([i]) * 16


def run_air(tmp_path, nodes, hours, drain_hours=1.0, sf=12, **world):
    # nodes: [(position, cfg overrides)]; -> (air, gateway, runners, modems, gateway counts)
    sim = SimTime()
    air = Air(sim.clock)
    keys = dict(keyed(i + 1) for i in range(len(nodes)))
    gw = SimGateway(keys)
    until = int((hours + drain_hours) * HOUR_MS)
    gw_clock = sim.spawn(lambda c: actor(c), "gw")
    gw_modem = SimModem(air, sim, gw_clock, "gw", (0.0, 0.0), sf=sf)
    gw_counts = {}
    actor = sim_gateway_actor(gw_modem, keys, gw, until, counts=gw_counts)
    runners, modems = [], []
    for i, (pos, over) in enumerate(nodes):
        node, key = keyed(i + 1)
        raw = {"node": node, "key": key.hex(), "interval_s": 300, "storm_interval_s": 60}
        raw.update(over)
        cfg = config.validate(raw)

        def node_main(clock, i=i, cfg=cfg, node=node, pos=pos):
            board = SimBoard(str(tmp_path / node), clock=clock, seed=i + 1, **world)
            modem = SimModem(air, sim, clock, node, pos, extra_loss_db=20, sf=sf)
            modems.append(modem)
            link = LoraLink(modem, node, clock)
            r = Runner(board, cfg, link)
            runners.append(r)
            r.run(int(hours * HOUR_MS))
            # the storm is over: no new frames, the backlog drains under the duty cycle
            n = r.node
            while clock.ms() < until - 60000 and n.uplink.buffer.live:
                n.uplink.transmit(n.receive)
                n.health.feed()
                clock.sleep_ms(20000)
                n.health.feed()

        sim.spawn(node_main, node)
    sim.run()
    return air, gw, runners, modems, gw_counts


def test_storm_hour_at_sf12_stays_within_one_percent_and_loses_nothing(tmp_path):
    # one node 2 km out under a manhole cover at SF12, a storm whose level rises at once: storm
    # mode wants a frame a minute (3.6 % of airtime); the node stretches to what 1 % allows
    air, gw, (r,), (modem,), gwc = run_air(tmp_path, [((2000.0, 0.0), {})], hours=1.0, drain_hours=1.0,
                                           rain_start_s=60, rain_rise_s=900)
    node = r.node
    assert r.boots == 1  # no watchdog reset, however long a send and its window take
    duty = air.max_duty(modem.radio)
    gw_duty = air.max_duty(next(x for x in air.radios if x.name == "gw"))
    print("node duty %.4f, gateway duty %.4f, frames %d, air %s, gw %s, link %s" % (
        duty, gw_duty, node.counts["frames"], air.counts, gwc, node.uplink.link.counts))
    assert duty <= 0.01 and gw_duty <= 0.01
    assert node.counts["frames"] >= 14  # about one per 214 s while storming
    # every frame exactly once at the gateway, contiguous, and the buffer empty
    seqs = sorted(d["seq"] for d in gw.decoded)
    assert seqs == list(range(node.counts["frames"])) and gw.duplicates >= 0
    assert node.uplink.buffer.live == 0
    assert any(d["flags"] & msg.F_STORM for d in gw.decoded)
    # the node said it stretched its interval (info 12: airtime used, stretched interval)
    stretched = [d["info"][12] for d in gw.decoded if 12 in d["info"]]
    assert stretched and any(s[1] >= 150 for s in stretched), stretched  # 60 s storm interval stretched
    # compact frames: most carry fewer than 6 readings (unchanged ones left out)
    from protocol import compact

    sizes = [len(compact.to_air(f)) for f in gw.frames]
    print("packet sizes", sizes)
    plain = [n for n, d in zip(sizes, gw.decoded, strict=True) if not d["info"]]
    assert max(plain) <= 51 and sum(plain) / len(plain) < 43  # fits EU868 DR0-2; unchanged readings left out


def test_five_minute_interval_at_sf12_holds_within_one_percent(tmp_path):
    # dry weather, 2 hours: a frame every 300 s, never stretched, 0.7 % of the air
    air, gw, (r,), (modem,), _ = run_air(tmp_path, [((1500.0, 0.0), {"heartbeat_s": 300})], hours=2.0,
                                         drain_hours=0.2)
    node = r.node
    duty = air.max_duty(modem.radio)
    times = [d["uptime_ms"] for d in gw.decoded]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    print("duty %.4f frames %d gaps %s link %s air %s" % (duty, len(times), sorted(set(gaps)), node.uplink.link.counts,
                                                         air.counts))
    assert duty <= 0.01 and len(times) >= 24
    assert all(g <= 301000 for g in gaps)  # the interval holds: uptime in whole seconds on the air
    assert node.uplink.link.stretch_ms == 0 and not any(12 in d["info"] and d["info"][12][1] for d in gw.decoded)
    assert sorted(d["seq"] for d in gw.decoded) == list(range(node.counts["frames"]))


def test_three_nodes_colliding_still_deliver_everything(tmp_path):
    # three nodes at the same distance boot together: their first frames collide at the
    # gateway (equal power, one SF); the backoff after an unanswered send separates them
    every5 = {"heartbeat_s": 300}
    nodes = [((1000.0, 0.0), every5), ((0.0, 1000.0), every5), ((-1000.0, 0.0), every5)]
    air, gw, runners, modems, gwc = run_air(tmp_path, nodes, hours=1.0, drain_hours=1.0)
    print("air", air.counts, "gw", gwc,
          [(r.node.cfg["node"], r.node.counts["frames"], r.node.uplink.buffer.live, r.node.uplink.link.counts)
           for r in runners])
    assert air.counts["lost_collision"] > 0  # they did collide
    for r in runners:
        n = r.node
        got = sorted(d["seq"] for d in gw.decoded if d["node"] == n.cfg["node"])
        assert got == list(range(n.counts["frames"])) and n.uplink.buffer.live == 0, (n.cfg["node"], got)
    assert all(air.max_duty(m.radio) <= 0.01 for m in modems)


def test_a_rain_gauge_nodes_frames_go_compact():
    # the tipping bucket's `rain` has a compact form (SPEC 13.2, type 8): a gauge node's frame
    # on LoRa is a compact packet, not the full frame it was (73 bytes for l, rain, b)
    from firmware.sensors import f16, f32
    from protocol import compact, cose, senml
    from protocol.cbor import loads

    sim = SimTime()
    node, key = keyed(9)
    link = LoraLink(SimModem(Air(sim.clock), sim, None, node, sf=12), node, None)
    recs = [senml.record("l", f32(0.733)), senml.record("rain", f32(61 * 0.2 / 1000)), senml.record("b", f16(3.69))]
    sizes = []
    for seq, rain_tips in ((0, 61), (1, 61), (2, 64)):
        recs[1] = senml.record("rain", f32(rain_tips * 0.2 / 1000))
        frame = link.encode(key, node, 1, seq, 1000 * seq, list(recs))
        air = compact.to_air(frame)
        sizes.append(len(air))
        assert air[0] == compact.PROFILE
        d = msg.decode(frame, {node: key}.get)
        want = [["l", "b", "rain"], ["l"], ["l", "rain"]][seq]  # unchanged readings left out
        assert [r[0] for r in d["records"]] == want
    assert loads(cose.parse(frame)[2])[0] == compact.DATA_X  # rain in it: type 8
    print("rain gauge frames on the air:", sizes)
    assert max(sizes) <= 34


def test_the_receive_window_reaches_the_start_of_the_answer_not_its_end(tmp_path):
    # SF12, a frame every 5 minutes: after each packet the radio listens until the ACK (the
    # gateway's 200 ms here and 1.48 s of air), then only until a command could have started and
    # its header arrived (1 s + 664 ms), not through a whole 51-byte packet (3.3 s): 3.2 s per
    # packet, 5.0 s before. Nothing lost.
    air, gw, (r,), (modem,), _ = run_air(tmp_path, [((1500.0, 0.0), {"heartbeat_s": 300})], hours=1.0,
                                         drain_hours=0.1)
    sent = r.node.uplink.link.counts["sent"]
    print("radio on per packet: tx %d ms, rx %d ms (%d packets)" % (
        modem.on_ms["tx"] / sent, modem.on_ms["rx"] / sent, sent))
    assert sorted(d["seq"] for d in gw.decoded) == list(range(r.node.counts["frames"])) and sent >= 12
    assert modem.on_ms["rx"] / sent <= 200 + 1483 + 1000 + 664 + 150
