# A simulated LoRa air for the rigs: radios at positions, packets with their airtime, path
# loss, the SNR each spreading factor needs, collisions, and per-radio duty-cycle accounting.
# The emulated SX1262 (tools/rig/pico/sx1262.mjs) puts its packets here through the Pico rig's
# control channel (attach()); simulated nodes call transmit() directly with their own clock.
#
# Figures, from the Semtech SX1261/2 datasheet (Rev 2.1, "DS" below):
# - time on air: DS 6.1.4, "LoRa Time-on-Air" (the formula micropython-lib's
#   BaseModem.get_n_symbols_x4 implements too; tests check that both agree);
# - the SNR the demodulator needs per spreading factor: DS Table 6-1 (SF5 -2.5 dB ... SF12
#   -20 dB, 2.5 dB a step);
# - the receiver's noise floor: thermal noise -174 dBm/Hz + 10 log10(BW) + a noise figure of
#   6 dB, which puts the SF12/125 kHz sensitivity at -137 dBm as DS 3.5 ("Receive Mode
#   Specifications") gives it;
# - path loss: free space to 1 m at 868 MHz (31.2 dB), then a log-distance exponent (2.0 in
#   free space, about 3 in a city), plus a radio's own extra loss (a cast-iron manhole cover
#   takes 20-30 dB);
# - a collision: packets on one frequency and spreading factor that overlap in time are both
#   lost, unless one is at least 6 dB stronger than every other (the capture effect; packets
#   of other spreading factors pass as LoRa's are quasi-orthogonal).
# - a receive with a timeout (SetRx, DS 13.1.5) goes on past its timeout for a packet whose
#   header the radio detected before it: the timer stops on the header (DS 13.1.7,
#   SetStopRxTimerOnPreambleDetect, false by default), so a receive window only has to reach the
#   start of a packet, its preamble and header (header_time_us), not its end.
# The EU868 duty cycle (ETSI EN 300 220, 1 % in 868.0-868.6 MHz) is counted per radio over
# every sliding hour: max_duty() is the worst hour's share of airtime.
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware.lora_link import DutyCycle

SNR_LIMIT_DB = {5: -2.5, 6: -5.0, 7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
NOISE_FIGURE_DB = 6.0
CAPTURE_DB = 6.0
HOUR_S = 3600.0


def time_on_air_us(payload_len: int, sf: int = 7, bw_hz: int = 125000, cr: int = 5, preamble: int = 8, crc: bool = True,
                   implicit: bool = False, ldro: bool | None = None) -> int:
    # DS 6.1.4: Tsym = 2^SF / BW; Npayload = 8 + max(ceil((8 PL + 16 CRC - 4 SF + 8 + 20 IH') /
    # (4 (SF - 2 DE))) (CR+4), 0) with IH' = 0 in implicit mode and 20 in explicit mode, and
    # for SF5/SF6 (no +8, but 6.25 preamble symbols more); cr is 5..8 for 4/5..4/8.
    # Symbol time in whole microseconds, as the driver has it.
    t_sym_us = 1000000 * (1 << sf) // bw_hz
    if ldro is None:
        ldro = t_sym_us >= 16000  # DS 6.1.1.4: low data rate optimisation from 16 ms symbols
    s_o, b_o = (2, -8) if sf in (5, 6) else (0, 0)
    bits = max(8 * payload_len + (16 if crc else 0) - 4 * sf + 8 + b_o + (0 if implicit else 20), 0)
    bps = (sf - 2 * bool(ldro)) * 4
    n_x4 = 17 + 4 * (preamble + s_o + 8 + (bits + bps - 1) // bps * cr)  # symbols times 4
    return t_sym_us * n_x4 // 4


def header_time_us(sf: int = 7, bw_hz: int = 125000, preamble: int = 8) -> int:
    # from a packet's start until a receiver has its header: the preamble, the sync word's 4.25
    # symbols, and the first 8 symbols of the payload part, which carry the explicit header (DS 6.1.4)
    return (1000000 * (1 << sf) // bw_hz) * (4 * preamble + 17 + 32) // 4


def same_channel(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    # a receiver with params a demodulates a packet sent with params b
    return (a.get("freq_hz"), a.get("sf"), a.get("bw_hz"), bool(a.get("invert_iq"))) == (
        b.get("freq_hz"), b.get("sf"), b.get("bw_hz"), bool(b.get("invert_iq")))


def noise_floor_dbm(bw_hz: float) -> float:
    return -174.0 + 10 * math.log10(bw_hz) + NOISE_FIGURE_DB


def path_loss_db(d_m: float, exponent: float) -> float:
    return 31.2 + 10 * exponent * math.log10(max(d_m, 1.0))


class Radio:
    def __init__(self, air: Air, name: str, pos: tuple[float, float], extra_loss_db: float,
                 deliver: Callable[[dict[str, Any]], None] | None) -> None:
        self.air = air
        self.name = name
        self.pos = pos
        self.extra_loss_db = extra_loss_db
        self.deliver = deliver  # deliver(packet dict) when a packet reaches it
        self.listening = None  # radio params while in receive mode
        self.since = 0.0  # when it started listening
        self.idle_at = None
        self.last_params = None
        self.busy_until = 0.0  # transmitting until then (half duplex)
        self.sent = []  # (start_s, airtime_s) of each transmission
        self.modem: SimModem | None = None  # the simulated modem on it, if any (SimModem)
        self.rig: Any = None  # the emulated Pico it is on, if any (PicoAir.attach)
        self.counts = {"sent": 0, "received": 0, "lost_collision": 0, "lost_snr": 0}

    def listen(self, params: Mapping[str, Any]) -> None:
        # listening again at the very instant it stopped (one receive call after another)
        # keeps the start: a packet already on the air is still heard from its preamble
        now = self.air.clock()
        if not (self.idle_at == now and self.last_params == params):
            self.since = now
        self.listening = self.last_params = dict(params)

    def idle(self) -> None:
        if self.listening is not None:
            self.idle_at = self.air.clock()
        self.listening = None

    def transmit(self, payload: bytes, params: Mapping[str, Any]) -> float:
        return self.air.transmit(self, payload, params)

    def max_duty(self, until: float | None = None) -> float:
        return self.air.max_duty(self, until)


class Air:
    def __init__(self, clock: Callable[[], float] = time.monotonic, exponent: float = 2.7) -> None:
        self.clock = clock
        self.exponent = exponent
        self.radios = []
        self.flying = []  # transmissions not yet ended: dicts with radio, payload, params, start, end
        self.done = []  # recent transmissions (for overlap checks), pruned as time goes on
        self._lock = threading.RLock()
        self.counts = {"packets": 0, "delivered": 0, "lost_collision": 0, "lost_snr": 0}

    def radio(self, name: str, pos: tuple[float, float] = (0.0, 0.0), extra_loss_db: float = 0.0,
              deliver: Callable[[dict[str, Any]], None] | None = None) -> Radio:
        r = Radio(self, name, pos, extra_loss_db, deliver)
        with self._lock:
            self.radios.append(r)
        return r

    def transmit(self, radio: Radio, payload: bytes, params: Mapping[str, Any]) -> float:
        # params: freq_hz, sf, bw_hz, cr, preamble, crc, implicit, power_dbm, invert_iq
        now = self.clock()
        air_s = time_on_air_us(len(payload), params["sf"], params["bw_hz"], params.get("cr", 5),
                               params.get("preamble", 8), params.get("crc", True),
                               params.get("implicit", False)) / 1e6
        tx = {"radio": radio, "payload": bytes(payload), "params": dict(params), "start": now, "end": now + air_s}
        with self._lock:
            self.flying.append(tx)
            radio.sent.append((now, air_s))
            radio.busy_until = now + air_s
            radio.counts["sent"] += 1
            self.counts["packets"] += 1
        return air_s

    def step(self, now: float | None = None) -> float | None:
        # deliver every transmission that has ended by now; -> seconds to the next end (or None)
        now = self.clock() if now is None else now
        with self._lock:
            ended = [tx for tx in self.flying if tx["end"] <= now]
            self.flying = [tx for tx in self.flying if tx["end"] > now]
            self.done = [tx for tx in self.done if tx["end"] > now - 60] + ended
            out = []
            for tx in sorted(ended, key=lambda t: t["end"]):
                out += self._receptions(tx)
            nxt = min((tx["end"] for tx in self.flying), default=None)
        for radio, pkt in out:
            if radio.deliver is not None:
                radio.deliver(pkt)
        return None if nxt is None else max(nxt - now, 0.0)

    def _rx_power(self, tx: dict[str, Any], rx: Radio) -> float:
        d = math.dist(tx["radio"].pos, rx.pos)
        loss = path_loss_db(d, self.exponent) + tx["radio"].extra_loss_db + rx.extra_loss_db
        return tx["params"].get("power_dbm", 14) - loss

    def _receptions(self, tx: dict[str, Any]) -> list[Any]:
        p = tx["params"]
        out = []
        for rx in self.radios:
            lp = rx.listening
            if rx is tx["radio"] or lp is None or rx.since > tx["start"]:
                continue  # not listening from the start of the preamble
            if rx.busy_until > tx["start"] and any(s <= tx["end"] and s + a > tx["start"] for s, a in rx.sent):
                continue  # half duplex: it was transmitting meanwhile
            if not same_channel(lp, p):
                continue
            signal = self._rx_power(tx, rx)
            noise = noise_floor_dbm(p["bw_hz"])
            snr = signal - noise
            if snr < SNR_LIMIT_DB[p["sf"]]:
                rx.counts["lost_snr"] += 1
                self.counts["lost_snr"] += 1
                continue
            others = [o for o in self.done + self.flying if o is not tx and o["radio"] is not rx
                      and o["params"].get("freq_hz") == p.get("freq_hz") and o["params"].get("sf") == p["sf"]
                      and o["start"] < tx["end"] and o["end"] > tx["start"]]
            if any(signal - self._rx_power(o, rx) < CAPTURE_DB for o in others):
                rx.counts["lost_collision"] += 1
                self.counts["lost_collision"] += 1
                continue
            total = 10 * math.log10(10 ** (signal / 10) + 10 ** (noise / 10))
            rx.counts["received"] += 1
            self.counts["delivered"] += 1
            out.append((rx, {"payload": tx["payload"], "rssi_dbm": round(total, 1), "snr_db": round(snr, 2),
                             "signal_rssi_dbm": round(signal, 1), "from": tx["radio"].name,
                             "start": tx["start"], "end": tx["end"]}))
        return out

    def arriving(self, rx: Radio, now: float) -> float | None:
        # the end of a packet rx, listening, has the header of by now and that has not ended (a
        # receive with a timeout runs on to it: DS 13.1.7), else None
        lp = rx.listening
        if lp is None:
            return None
        with self._lock:
            for tx in self.flying:
                p = tx["params"]
                head = header_time_us(p["sf"], p["bw_hz"], p.get("preamble", 8)) / 1e6
                if (tx["radio"] is not rx and rx.since <= tx["start"] and tx["start"] + head <= now < tx["end"]
                        and same_channel(lp, p)):
                    return tx["end"]
        return None

    def max_duty(self, radio: Radio, until: float | None = None) -> float:
        # the largest share of airtime radio used in any hour up to `until` (sliding window:
        # the worst hour starts at one of its transmissions)
        until = self.clock() if until is None else until
        sent = sorted(radio.sent)
        worst = 0.0
        for i, (s0, _) in enumerate(sent):
            end = min(s0 + HOUR_S, until)
            used = 0.0
            for s, a in sent[i:]:
                if s >= end:
                    break
                used += min(a, end - s)
            worst = max(worst, used / HOUR_S)
        return worst


# ------------------------------------------------------------ emulated Picos on the air


class PicoAir:
    # Emulated Picos with the SX1262 model share one Air in wall time: each rig's radio events
    # ({"ev": "lora_tx" | "lora_rx_on" | "lora_idle", ...} from sx1262.mjs) go to the air, and a
    # thread hands each packet to the receiving rigs ({"lora_rx": {...}}) when it ends.
    def __init__(self, exponent: float = 2.7) -> None:
        self.air = Air(time.monotonic, exponent)
        self.toa_mismatch = []  # (rig name, the model's airtime, the air's) when they differ
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._send = threading.Lock()  # the air thread and the rigs' event threads both write to rigs
        self._thread = threading.Thread(target=self._run, name="lora-air", daemon=True)
        self._thread.start()

    def attach(self, rig: Any, name: str, pos: tuple[float, float] = (0.0, 0.0), extra_loss_db: float = 0.0) -> Radio:
        def deliver(pkt: dict[str, Any]) -> None:
            with self._send:
                rig.control({"lora_rx": {"payload": pkt["payload"].hex(), "rssi_dbm": pkt["rssi_dbm"],
                                         "snr_db": pkt["snr_db"], "signal_rssi_dbm": pkt["signal_rssi_dbm"]}})

        radio = self.air.radio(name, pos, extra_loss_db, deliver)
        radio.rig = rig
        rig.listeners.append(lambda e: self._event(radio, e))
        return radio

    def _event(self, radio: Radio, e: dict[str, Any]) -> None:
        ev = e.get("ev")
        if ev == "lora_tx":
            air_s = radio.transmit(bytes.fromhex(e["payload"]), e["params"])
            if abs(air_s * 1e6 - e["toa_us"]) > 1:
                self.toa_mismatch.append((radio.name, e["toa_us"], air_s * 1e6))
            p = e["params"]
            for r in self.air.radios:  # a receiver in RX has the header after header_us (sx1262.mjs)
                if r is not radio and r.rig is not None and r.listening is not None and same_channel(r.listening, p):
                    with self._send:
                        r.rig.control({"lora_header": {"header_us": header_time_us(p["sf"], p["bw_hz"], p["preamble"]),
                                                       "end_us": int(air_s * 1e6)}})
            self._wake.set()
        elif ev == "lora_rx_on":
            radio.listen(e["params"])
        elif ev == "lora_idle":
            radio.idle()

    def _run(self) -> None:
        while not self._stop.is_set():
            nxt = self.air.step()
            self._wake.wait(0.5 if nxt is None else min(nxt + 0.001, 0.5))
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2)


# ------------------------------------------------------------ simulated radios in virtual time


class SimTime:
    # Discrete-event time for actors in threads (nodes, a gateway): exactly one runs at a
    # time; sleep(ms) hands over to the actor due first. A node's code runs unchanged on it
    # (ActorClock is a board clock), and an hour of air takes seconds.
    def __init__(self, pace: float | None = None) -> None:
        # pace: virtual seconds per wall second (the demo's compressed time); None: as fast as it goes
        self.now_ms = 0
        self.pace = pace
        self.stopping = False  # set: every actor ends at its next wait
        self._wall0 = time.monotonic()
        self._cond = threading.Condition()
        self._wake = {}  # actor -> (ms, order) while it sleeps
        self._order = 0
        self._running = None
        self._alive = 0
        self.errors = []

    def clock(self) -> float:
        return self.now_ms / 1000.0

    def spawn(self, fn: Callable[[ActorClock], object], name: str) -> ActorClock:
        clock = ActorClock(self, name)
        with self._cond:
            self._alive += 1
            self._wake[clock] = (0, self._order)
            self._order += 1

        def main():
            try:
                self._wait_turn(clock)
                fn(clock)
            except SystemExit:
                pass
            except BaseException as e:  # noqa: BLE001 - reported by run()
                self.errors.append((name, e))
            finally:
                with self._cond:
                    self._alive -= 1
                    self._running = None
                    self._next()

        t = threading.Thread(target=main, name="sim-" + name, daemon=True)
        clock.thread = t
        return clock

    def run(self, timeout_s: float = 600) -> None:
        threads = [c.thread for c in list(self._wake)]
        for t in threads:
            t.start()
        with self._cond:
            self._next()
        for t in threads:
            t.join(timeout_s)
        if self.errors:
            raise self.errors[0][1]

    def _next(self):
        # with the lock held: wake the actor due first once no actor runs
        if self._running is not None or not self._wake:
            return
        actor = min(self._wake, key=lambda a: self._wake[a])
        ms = self._wake.pop(actor)[0]
        if self.pace and ms > self.now_ms:
            ahead = self._wall0 + ms / 1000 / self.pace - time.monotonic()
            if ahead > 0:
                time.sleep(min(ahead, 1.0))  # keeps pace with the wall (every actor waits anyway)
        self.now_ms = max(self.now_ms, ms)
        self._running = actor
        self._cond.notify_all()

    def _wait_turn(self, actor: ActorClock) -> None:
        with self._cond:
            while self._running is not actor:
                self._cond.wait()

    def sleep(self, actor: ActorClock, ms: int) -> None:
        if self.stopping:
            raise SystemExit(0)  # the run is over: the actor's thread ends here
        with self._cond:
            self._wake[actor] = (self.now_ms + max(0, ms), self._order)
            self._order += 1
            self._running = None
            self._next()
            while self._running is not actor:
                self._cond.wait()

    def nudge(self, actor: ActorClock, at_ms: int) -> None:
        # wake a sleeping actor no later than at_ms (a packet ends for its listening radio)
        with self._cond:
            w = self._wake.get(actor)
            if w is not None and w[0] > at_ms:
                self._wake[actor] = (max(at_ms, self.now_ms), w[1])


class ActorClock:
    # a board clock (firmware/sim/world.py VirtualClock's interface) on SimTime
    def __init__(self, sim: SimTime, name: str) -> None:
        self.sim = sim
        self.name = name
        self.thread: threading.Thread | None = None  # SimTime.spawn's, started by SimTime.run
        self._unix_offset = None

    def ms(self) -> int:
        return self.sim.now_ms

    def sleep_ms(self, ms: int) -> None:
        self.sim.sleep(self, int(ms))

    def set_time(self, unix_s: int) -> None:
        self._unix_offset = unix_s - self.sim.now_ms // 1000

    def time_s(self) -> int | None:
        return None if self._unix_offset is None else self._unix_offset + self.sim.now_ms // 1000


class RxPacket(bytes):
    # what micropython-lib's recv() returns: the payload, with rssi (dBm) and snr (dB x 4)
    rssi: int | None = None
    snr: int | None = None


class SimModem:
    # micropython-lib's SyncModem API (send, recv, get_time_on_air_us) on a radio of an Air in
    # SimTime: what firmware/lora_link.py drives on a board, for simulations and tests
    def __init__(self, air: Air, sim: SimTime, clock: ActorClock, name: str, pos: tuple[float, float] = (0.0, 0.0),
                 extra_loss_db: float = 0.0, **params: Any) -> None:
        self.air = air
        self.sim = sim
        self.clock = clock
        self.params: dict[str, Any] = dict({"freq_hz": 868100000, "sf": 12, "bw_hz": 125000, "cr": 5, "preamble": 8,
                                            "crc": True, "implicit": False, "power_dbm": 14, "invert_iq": False},
                                           **params)
        self.inbox = []
        self.radio = air.radio(name, pos, extra_loss_db, self.inbox.append)
        self.radio.modem = self
        self.duty: DutyCycle | None = None  # a gateway's radio: its duty cycle (sim_gateway_actor)
        self.on_ms = {"tx": 0, "rx": 0}  # the radio's time transmitting and receiving

    def get_time_on_air_us(self, n: int) -> int:
        p = self.params
        return time_on_air_us(n, p["sf"], p["bw_hz"], p["cr"], p["preamble"], p["crc"], p["implicit"])

    def send(self, packet: bytes) -> int:
        self.radio.idle()
        air_s = self.air.transmit(self.radio, packet, self.params)
        end_ms = self.sim.now_ms + int(math.ceil(air_s * 1000))
        for r in self.air.radios:
            m = r.modem
            if m is not None and r.listening is not None and r is not self.radio:
                self.sim.nudge(m.clock, end_ms)
        self.on_ms["tx"] += end_ms - self.sim.now_ms
        self.clock.sleep_ms(end_ms - self.sim.now_ms)
        self.air.step(self.sim.clock())
        return end_ms

    def recv(self, timeout_ms: int | None = None, rx_length: int = 0xFF, rx_packet: Any = None) -> RxPacket | None:
        deadline = None if timeout_ms is None else self.sim.now_ms + timeout_ms
        self.radio.listen(self.params)
        t0 = self.sim.now_ms
        try:
            while True:
                self.air.step(self.sim.clock())
                if self.inbox:
                    got = self.inbox.pop(0)
                    pkt = RxPacket(got["payload"])
                    pkt.rssi = int(round(got["rssi_dbm"]))
                    pkt.snr = int(round(got["snr_db"] * 4))
                    return pkt
                if deadline is not None and self.sim.now_ms >= deadline:
                    end = self.air.arriving(self.radio, self.sim.clock())
                    if end is None:
                        return None
                    deadline = int(math.ceil(end * 1000)) + 1  # its header came in time: received to its end
                nxt = self.air.step(self.sim.clock())
                wait = 60000 if deadline is None else deadline - self.sim.now_ms
                if nxt is not None:
                    wait = min(wait, int(math.ceil(nxt * 1000)) + 1)
                self.clock.sleep_ms(max(1, wait))
        finally:
            self.on_ms["rx"] += self.sim.now_ms - t0
            self.radio.idle()


def sim_gateway_actor(modem: SimModem, keys: Mapping[str, bytes], gateway: Any, until_ms: int, permille: int = 10,
                      turnaround_ms: int = 200, counts: dict[str, int] | None = None,
                      gap_ms: int = 0) -> Callable[[ActorClock], None]:
    # A gateway's radio in SimTime: every packet it hears goes to `gateway` (firmware/sim/
    # gateway.py SimGateway: message -> replies); its ACKs go back compact, under the
    # gateway's own duty cycle (an ACK the hour has no room for is skipped: the next one is
    # cumulative); gap_ms between one reply and the next (a command after its ACK).
    # -> the actor function for SimTime.spawn.
    from firmware.lora_link import DutyCycle
    from gateway.radio import AddressBook
    from protocol import compact
    from protocol.cbor import FrameError

    book = AddressBook(lambda: keys)
    by_addr = {}
    for node in keys:
        by_addr.setdefault(compact.address(node), []).append(node)
    counts = counts if counts is not None else {}
    counts.update(heard=0, acks=0, skipped=0, rejected=0)

    def run(clock: ActorClock) -> None:
        duty = DutyCycle(clock, permille)
        modem.duty = duty
        while clock.ms() < until_ms:
            pkt = modem.recv(timeout_ms=min(60000, until_ms - clock.ms()))
            if pkt is None:
                continue
            counts["heard"] += 1
            replies = []
            try:
                for node in by_addr.get(compact.addr_of(pkt), ()):
                    replies = gateway(compact.from_air(pkt, node))
                    if replies:
                        break
            except FrameError:
                counts["rejected"] += 1
                continue
            clock.sleep_ms(turnaround_ms)
            for i, r in enumerate(replies):
                if i and gap_ms:
                    clock.sleep_ms(gap_ms)
                air = book.downlink(r)  # as gateway/radio.py makes it: compact ACKs and commands
                t = (modem.get_time_on_air_us(len(air)) + 999) // 1000
                if not duty.allows(t):
                    counts["skipped"] += 1
                    continue
                duty.spend(t)
                modem.send(air)
                counts["acks"] += 1

    return run
