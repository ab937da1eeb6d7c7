# The simulated LoRa air (tools/rig/lora_air.py): time on air as micropython-lib's driver
# computes it, the SNR limit per spreading factor, collisions and capture, half duplex, and
# the duty cycle over any hour. A virtual clock: no waiting.
import json

import pytest

from tests.support import mpvm
from tools.lora_packages import vendor_dir
from tools.rig.lora_air import HOUR_S, SNR_LIMIT_DB, Air, noise_floor_dbm, path_loss_db, time_on_air_us

EU868 = 868100000


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def params(sf=7, **kw):
    return dict({"freq_hz": EU868, "sf": sf, "bw_hz": 125000, "cr": 5, "preamble": 8, "crc": True,
                 "implicit": False, "power_dbm": 14}, **kw)


def setup(exponent=2.7):
    clock = Clock()
    air = Air(clock, exponent)
    got = {}

    def radio(name, pos, **kw):
        got[name] = []
        return air.radio(name, pos, deliver=got[name].append, **kw)

    return clock, air, radio, got


GRID = [(sf, bw, cr, pre, n, crc, ih) for sf in range(5, 13) for bw in (125000, 250000, 500000)
        for cr in (5, 8) for pre in (8, 12) for n in (0, 1, 13, 43, 51, 222, 255) for crc in (True, False)
        for ih in (False, True)]


@pytest.mark.micropython
def test_time_on_air_is_what_the_driver_computes(tmp_path):
    # micropython-lib's BaseModem.get_time_on_air_us (lora/modem.py) on the MicroPython VM, over
    # SF5-SF12, 125-500 kHz, CR 4/5 and 4/8, preambles, lengths 0-255, CRC and implicit header
    base = vendor_dir()
    if not (base / "lora" / "lora" / "modem.py").is_file():
        pytest.skip("micropython-lib's lora drivers not found (CITYNODE_LORA_LIB)")
    script = """
import json, sys
from modem import BaseModem
class M(BaseModem):
    def _after_init(self):
        pass
    def _symbol_offsets(self):  # the SX126x's SF5/SF6 offsets (lora/sx126x.py)
        return (2, -8) if self._sf in (5, 6) else (0, 0)
m = M(None)
out = []
for sf, bw, cr, pre, n, crc, ih in json.loads(sys.stdin.read()):
    m._sf, m._bw_hz, m._coding_rate, m._preamble_len, m._crc_en, m._implicit_header = sf, bw, cr, pre, crc, ih
    out.append(m.get_time_on_air_us(n))
print(json.dumps(out))
"""
    # modem.py alone (its package's __init__ wants a chip driver, and the unix port has no machine.Pin)
    (tmp_path / "modem.py").write_bytes((base / "lora" / "lora" / "modem.py").read_bytes())
    proc = mpvm.run(script, path=[tmp_path], input=json.dumps(GRID), heap="2m")
    driver = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = [time_on_air_us(n, sf, bw, cr, pre, crc, ih) for sf, bw, cr, pre, n, crc, ih in GRID]
    assert ours == driver
    assert time_on_air_us(43, 12) == 2138112 and time_on_air_us(43, 7) == 87296  # docs/lora.md


def test_snr_limit_per_spreading_factor_decides_reach():
    # 2 km through a manhole cover (25 dB): SF7 needs -7.5 dB and does not make it, SF12 (-20 dB) does
    clock, air, radio, got = setup()
    node = radio("node", (0, 0), extra_loss_db=25)
    gw = radio("gw", (2000, 0))
    snr = 14 - path_loss_db(2000, 2.7) - 25 - noise_floor_dbm(125000)
    assert SNR_LIMIT_DB[12] < snr < SNR_LIMIT_DB[7]
    for sf in (7, 12):
        gw.listen(params(sf))
        node.transmit(b"x" * 20, params(sf))
        clock.t += 3
        air.step()
    assert [p["snr_db"] for p in got["gw"]] == [pytest.approx(snr, abs=0.01)]
    assert air.counts == {"packets": 2, "delivered": 1, "lost_collision": 0, "lost_snr": 1}


def test_collisions_capture_and_orthogonal_spreading_factors():
    clock, air, radio, got = setup()
    gw = radio("gw", (0, 0))
    near, far, far2 = radio("near", (100, 0)), radio("far", (1000, 0)), radio("far2", (0, 1000))
    gw.listen(params(9))
    # equal strength, overlapping: both lost
    far.transmit(b"a" * 20, params(9))
    clock.t += 0.05
    far2.transmit(b"b" * 20, params(9))
    clock.t += 1
    air.step()
    assert got["gw"] == [] and air.counts["lost_collision"] == 2
    # 27 dB stronger: the near one is captured, the far one lost
    near.transmit(b"c" * 20, params(9))
    far.transmit(b"d" * 20, params(9))
    clock.t += 1
    air.step()
    assert [p["payload"] for p in got["gw"]] == [b"c" * 20]
    # another spreading factor does not collide (quasi-orthogonal)
    far.transmit(b"e" * 20, params(9))
    far2.transmit(b"f" * 20, params(10))
    clock.t += 1
    air.step()
    assert got["gw"][-1]["payload"] == b"e" * 20
    # not overlapping: both arrive
    far.transmit(b"g" * 20, params(9))
    clock.t += 0.3
    air.step()
    far2.transmit(b"h" * 20, params(9))
    clock.t += 0.3
    air.step()
    assert [p["payload"] for p in got["gw"][-2:]] == [b"g" * 20, b"h" * 20]


def test_a_transmitting_radio_hears_nothing_and_several_receivers_hear_one_packet():
    clock, air, radio, got = setup()
    a, b, c = radio("a", (0, 0)), radio("b", (300, 0)), radio("c", (0, 300))
    for r in (a, b, c):
        r.listen(params(8))
    a.transmit(b"1" * 10, params(8))
    b.transmit(b"2" * 10, params(8))  # b is sending: it cannot hear a; at c the two collide (300 m each)
    clock.t += 1
    air.step()
    assert got["a"] == [] and got["b"] == []
    assert got["c"] == []  # equal power at c: collision
    a.transmit(b"3" * 10, params(8))
    clock.t += 1
    air.step()
    assert [p["payload"] for p in got["b"]] == [b"3" * 10] and [p["payload"] for p in got["c"]] == [b"3" * 10]


def test_duty_cycle_is_the_worst_sliding_hour():
    clock, air, radio, _ = setup()
    node = radio("node", (0, 0))
    toa = time_on_air_us(43, 12) / 1e6
    for i in range(12):  # every 5 minutes at SF12: 0.71 %
        clock.t = i * 300
        node.transmit(b"x" * 43, params(12))
    assert node.max_duty(until=HOUR_S) == pytest.approx(12 * toa / HOUR_S)
    # a burst of 10 at 5400 s: the worst hour is 2100-5700 s, with 5 of the regular packets and the burst
    for i in range(10):
        clock.t = 5400 + i * 3
        node.transmit(b"x" * 43, params(12))
    assert node.max_duty(until=2 * HOUR_S) == pytest.approx((5 + 10) * toa / HOUR_S)


def test_a_receive_runs_on_for_a_packet_whose_header_came_before_its_timeout():
    # SX1261/2 DS 13.1.7: the RX timer stops on the header; a SimModem recv(timeout) whose
    # timeout falls inside a packet gets it when the preamble and header were in time, not before
    from tools.rig.lora_air import SimModem, SimTime, header_time_us

    head_ms = header_time_us(12) / 1000  # 8 preamble + 4.25 + 8 symbols of 32.768 ms: 663.6 ms
    assert round(head_ms, 1) == 663.6 and header_time_us(12) < time_on_air_us(0, 12) + 1
    for start_ms, heard in ((300, True), (400, False)):
        sim = SimTime()
        air = Air(sim.clock)
        out = {}

        def rx(clock, out=out, air=air, sim=sim):
            m = SimModem(air, sim, clock, "rx", (100.0, 0.0), sf=12)
            out["pkt"] = m.recv(timeout_ms=1000)  # the header of a packet sent at 300 ms is in at 964 ms
            out["at"] = sim.now_ms
            out["on"] = m.on_ms["rx"]

        def tx(clock, start_ms=start_ms, air=air, sim=sim):
            m = SimModem(air, sim, clock, "tx", (0.0, 0.0), sf=12)
            clock.sleep_ms(start_ms)
            m.send(b"c" * 24)  # 1.48 s at SF12: ends long after the timeout

        sim.spawn(rx, "rx")
        sim.spawn(tx, "tx")
        sim.run()
        end_ms = start_ms + time_on_air_us(24, 12) / 1000
        if heard:
            assert out["pkt"] == b"c" * 24 and end_ms <= out["at"] <= end_ms + 2
        else:
            assert out["pkt"] is None and out["at"] == 1000 == out["on"]
