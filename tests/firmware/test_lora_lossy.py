# A LoRa link that works but loses downlinks (the gateway's ACKs): on LoRa an ACK is lost far
# more often than a frame on Wi-Fi (the gateway's radio busy, its own duty cycle, collisions,
# fading at SF12), so three lost in a row are ordinary. Such a link must keep the frames
# flowing at what the duty cycle allows; only a link that answers nothing at all (the gateway
# down) may slow the node to probes, and the first ACK after it must drain the backlog at once.
# The firmware's own Node on sim boards in virtual time on the simulated air
# (tools/rig/lora_air.py), as in test_lora_link.py; a seeded loss on the node's receiver.
import random

from firmware import config
from firmware.lora_link import LoraLink
from firmware.sim.board import Runner, SimBoard
from firmware.sim.gateway import SimGateway
from tools.rig.lora_air import Air, SimModem, SimTime, sim_gateway_actor

HOUR_MS = 3600 * 1000


def run_lossy(tmp_path, hours, loss, outage=None, sf=12, seed=7, interval_s=300):
    # One node 1.5 km out at `sf`, a frame every interval_s for `hours`; the node's radio misses
    # `loss` of the packets that reach it (a seeded draw per packet); outage (start_ms, end_ms):
    # the gateway's radio hears nothing then (the gateway is down). -> (first reception ms by
    # seq, creation ms by seq, the node, the air, the node's radio)
    sim = SimTime()
    air = Air(sim.clock)
    node_id, key = "sew-01", bytes([1]) * 16
    got = {}  # seq -> sim ms when the gateway first had it
    gw = SimGateway({node_id: key})

    def gateway(message):
        replies = gw(message)
        for d in gw.decoded:
            got.setdefault(d["seq"], sim.now_ms)
        return replies

    until = int(hours * HOUR_MS)
    gw_modem = SimModem(air, sim, None, "gw", (0.0, 0.0), sf=sf)
    gw_modem.clock = sim.spawn(lambda c: actor(c), "gw")
    actor = sim_gateway_actor(gw_modem, {node_id: key}, gateway, until)
    if outage is not None:
        hear = gw_modem.radio.deliver
        gw_modem.radio.deliver = lambda pkt: None if outage[0] <= sim.now_ms < outage[1] else hear(pkt)
    rnd = random.Random(seed)
    heard = []  # sim ms of every packet the node's radio took
    out = {"heard": heard}
    cfg = config.validate({"node": node_id, "key": key.hex(), "interval_s": interval_s, "storm_interval_s": 60,
                           "heartbeat_s": interval_s})

    def node_main(clock):
        board = SimBoard(str(tmp_path / node_id), clock=clock, seed=1)
        modem = SimModem(air, sim, clock, node_id, (1500.0, 0.0), extra_loss_db=20, sf=sf)
        take = modem.radio.deliver

        def deliver(pkt):
            if rnd.random() >= loss:
                heard.append(sim.now_ms)
                take(pkt)

        modem.radio.deliver = deliver
        out["radio"] = modem.radio
        r = Runner(board, cfg, LoraLink(modem, node_id, clock))
        out["node"] = r
        r.run(until)

    sim.spawn(node_main, node_id)
    sim.run()
    made = {d["seq"]: d["uptime_ms"] for d in gw.decoded}
    out["got"], out["made"], out["dups"], out["decoded"] = got, made, gw.duplicates, gw.decoded
    out["node"], out["air"] = out["node"].node, air
    return out


def latencies(got, made):
    # seconds from a frame's sampling (its uptime, whole seconds on the air) to its first reception
    return [(got[s] - made[s]) / 1000 for s in sorted(got)]


def test_a_lossy_downlink_keeps_frames_flowing(tmp_path):
    # 30 % of the ACKs lost for 6 hours, the uplink fine: every frame must reach the gateway
    # about when it is made, not after the 10-minute probes of a link taken for down
    r = run_lossy(tmp_path, hours=6.0, loss=0.3)
    got, made, node, air, radio = r["got"], r["made"], r["node"], r["air"], r["radio"]
    lat = latencies(got, made)
    late = [x for x in lat if x > 60]
    print("frames %d, latency s: max %.0f, over 60 s %d, link %s, uplink resent %d, duty %.4f" % (
        len(lat), max(lat), len(late), node.uplink.link.counts, node.counts["resent"], air.max_duty(radio)))
    assert len(got) == node.counts["frames"] >= 70
    assert air.max_duty(radio) <= 0.01
    assert max(lat) <= 60, sorted(lat)[-8:]


def test_the_backlog_drains_at_once_when_the_gateway_comes_back(tmp_path):
    # the gateway is down for an hour, then back, with 30 % of its ACKs lost. At SF10 a frame
    # takes 0.5 s of air: the duty cycle (36 s an hour, ETSI EN 300 220) would carry the backlog
    # of 12 frames in one go. While nothing answers the node probes, backing off to one probe
    # in 10 minutes; from the first ACK it hears the whole backlog must go out at once, a lost
    # ACK in the middle of it not taking the link for down again.
    down, up = 1 * HOUR_MS, 2 * HOUR_MS
    for seed in (1, 2, 7):
        (tmp_path / str(seed)).mkdir()
        r = run_lossy(tmp_path / str(seed), hours=3.0, loss=0.3, outage=(down, up), seed=seed, sf=10)
        got, made, node, air, radio = r["got"], r["made"], r["node"], r["air"], r["radio"]
        backlog = [s for s in made if down <= made[s] < up]
        answered = min(t for t in r["heard"] if t >= up)  # the node hears the gateway again
        drained = max(got[s] for s in backlog)
        later = max(got[s] - made[s] for s in made if made[s] >= up)
        print("seed %d: backlog %d frames, first ACK %.0f s after the outage, all at the gateway %.0f s after "
              "it; frames after the outage at most %.0f s late; link %s, duty %.4f" % (
                  seed, len(backlog), (answered - up) / 1000, (drained - answered) / 1000, later / 1000,
                  node.uplink.link.counts, air.max_duty(radio)))
        assert len(backlog) >= 11 and sorted(got) == list(range(node.counts["frames"]))
        assert answered - up <= 600000 + 60000  # probes while down: at most 10 minutes apart
        assert drained - answered <= 120000, (seed, (drained - answered) / 1000)
        assert later <= answered - up + 120000, (seed, later / 1000)  # nor do the frames made after it wait
        assert air.max_duty(radio) <= 0.01
        # the dead hour: a whole window unanswered, then probes backing off to one in 10 minutes
        sends = [t for t, _ in radio.sent if down <= t * 1000 < up]
        print("  sent while the gateway was down: %d, at %s s" % (len(sends), [round(t) for t in sends]))
        # (where in the hour the 10 minutes are reached depends on when the window ran out)
        gaps = [b - a for a, b in zip(sends, sends[1:])]
        assert len(sends) <= 13 and gaps[-1] >= 590 and min(gaps[-4:]) >= 290, gaps


def test_fresh_frames_go_before_the_backlog_at_sf12(tmp_path):
    # At SF12 a frame takes 2.1 s of air and the 5-minute reports alone use 72 % of the hour's
    # 36 s (ETSI EN 300 220), so a 1 h outage's backlog takes hours to drain. Sent oldest
    # first, every frame made after the link is back waited behind it, up to an hour: the
    # level an hour late, useless in a storm. On a duty-cycle-limited link the newest frame not
    # yet sent goes first; the backlog drains oldest first with the airtime left, every frame
    # still delivered exactly once and no hour over 1 %.
    down, up = 1 * HOUR_MS, 2 * HOUR_MS
    for seed, loss in ((7, 0.0), (2, 0.3)):
        (tmp_path / str(seed)).mkdir()
        r = run_lossy(tmp_path / str(seed), hours=7.0, loss=loss, outage=(down, up), seed=seed, sf=12)
        got, made, node, air, radio = r["got"], r["made"], r["node"], r["air"], r["radio"]
        backlog = sorted(s for s in made if made[s] < up and got[s] >= up)
        answered = min(t for t in r["heard"] if t >= up)
        fresh = [(got[s] - made[s]) / 1000 for s in made if made[s] >= answered]
        drained = max(got[s] for s in backlog)
        print("seed %d, loss %.1f: backlog %d frames, at the gateway %.0f min after the first ACK; frames made "
              "after it: %d, at most %.0f s late (mean %.0f); duplicates at the gateway %d, duty %.4f, link %s" % (
                  seed, loss, len(backlog), (drained - answered) / 60000, len(fresh), max(fresh),
                  sum(fresh) / len(fresh), r["dups"], air.max_duty(radio), node.uplink.link.counts))
        assert len(backlog) >= 12 and len(fresh) >= 40
        # every frame reached the gateway, once (the gateway counts a second copy as a duplicate)
        assert sorted(got) == list(range(node.counts["frames"])) and len(r["decoded"]) == len(got)
        assert node.uplink.buffer.live <= 1  # the backlog drained within the run
        assert max(fresh) <= 60, sorted(fresh)[-5:]  # seconds, not an hour
        assert sorted(backlog, key=got.get) == backlog  # the backlog oldest first
        assert air.max_duty(radio) <= 0.01


def test_the_newest_goes_first_only_where_the_gateway_still_takes_the_older_ones(tmp_path):
    # A gateway refuses a frame of a boot below one it has stored, and one more than 1024 seqs
    # below the highest (SPEC 10): the newest frame goes first only while every buffered frame is
    # of its boot and within that window of it; otherwise oldest first, as on every other link.
    # The firmware's Buffer and Uplink; the link a stand-in that takes every frame (no radio
    # here), with the LoRa link's fresh_first.
    from firmware.buffer import Buffer
    from firmware.uplink import Pace, Uplink

    class Clock:
        def ms(self):
            return 1000

    class Air:
        fresh_first = True
        offline_after = 8  # as LoraLink's

        def __init__(self):
            self.sent = []

        def send(self, frame, backlog=False):
            self.sent.append((frame, backlog))
            return True

    def sends(frames, window=8):
        # frames: (boot, seq) put in this order, the link up -> the (boot, seq) sent, in order
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        air = Air()
        up = Uplink(air, Pace(Clock(), window=window), Buffer(str(d / "buffer.bin"), slots=16), {"resent": 0},
                    lambda *a: None, lambda: None)
        for boot, seq in frames:
            up.put(boot, seq, b"%d.%d" % (boot, seq))
        up.pump()
        return [tuple(int(x) for x in f.split(b".")) + (b,) for f, b in air.sent]

    # one boot: the newest first, then the rest oldest first, as backlog
    assert sends([(1, s) for s in range(5)]) == [(1, 4, False), (1, 0, True), (1, 1, True), (1, 2, True),
                                                 (1, 3, True)]
    # the node booted while frames of the boot before were still unacknowledged: oldest first
    assert [f[:2] for f in sends([(1, 7), (1, 8), (2, 0), (2, 1)])] == [(1, 7), (1, 8), (2, 0), (2, 1)]
    # the newest 1024 seqs or more above the oldest: oldest first
    assert [f[:2] for f in sends([(1, 5), (1, 1029)])] == [(1, 5), (1, 1029)]
    assert [f[:2] for f in sends([(1, 5), (1, 1028)])] == [(1, 1028), (1, 5)]
