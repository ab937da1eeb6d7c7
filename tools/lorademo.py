# `citynode demo --lora`: the demo's nodes on the simulated LoRa air (tools/rig/lora_air.py)
# instead of UDP: the firmware's Node with its LoRa link (firmware/lora_link.py: compact
# frames, the 1 % duty cycle, ACKs in the receive window) at SF9 from shafts 0.5-3 km from the
# gateway's radio, in the demo's compressed time. The radio hands every frame it hears to the
# real gateway (over UDP on loopback, so dedup, MQTT and the status page are the real ones) and
# answers with compact cumulative ACKs over the air under its own duty cycle.
import os
import socket
import sys
import threading
from typing import Any

from firmware import config as node_config
from firmware.lora_link import LoraLink
from firmware.sim.board import Runner, SimBoard
from firmware.sim.gateway import SimGateway
from tools import fleet
from tools.rig.lora_air import ActorClock, Air, SimModem, SimTime, sim_gateway_actor

SF = 9
DAY_MS = 24 * 3600 * 1000


class LoraCity:
    def __init__(self, tmp: str, keys: dict[str, bytes], gateway_addr: tuple[str, int], stop: threading.Event,
                 factor: int = fleet.FACTOR) -> None:
        self.sim = SimTime(pace=factor)
        self.air = Air(self.sim.clock)
        self.keys = keys
        self.stop = stop
        self.errors = []
        self.node_id = "lora air"  # the demo names a failed part by it
        self.thread = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        local = SimGateway(keys)

        def hear(message: bytes) -> list[bytes]:
            self.sock.sendto(message, gateway_addr)  # the real gateway: dedup, outbox, MQTT, the page
            return local(message)  # the radio's own ACK, over the air

        gw_clock = self.sim.spawn(lambda c: self._gateway(c), "gw")
        self.gw_modem = SimModem(self.air, self.sim, gw_clock, "gw", (0.0, 0.0), sf=SF)
        self.gw_counts = {}
        self._gw_actor = sim_gateway_actor(self.gw_modem, keys, hear, DAY_MS, counts=self.gw_counts)
        for i, (node, key) in enumerate(sorted(keys.items())):
            self.sim.spawn(lambda c, i=i, node=node, key=key: self._node(c, i, node, key, tmp), node)

    def _gateway(self, clock: ActorClock) -> None:
        self._gw_actor(clock)

    def _node(self, clock: ActorClock, i: int, node: str, key: bytes, tmp: str) -> None:
        cfg = node_config.validate({
            "node": node, "key": key.hex(),  # no board: the sim board's radio is the simulated air's
            "link": {"kind": "lora", "sf": SF}, "interval_s": 300, "storm_interval_s": 30, "heartbeat_s": 900,
            "watchdog_ms": 600000})
        flash = os.path.join(tmp, "nodes")
        os.makedirs(flash, exist_ok=True)
        world: dict[str, Any] = fleet.world_for(i)
        board = SimBoard(os.path.join(flash, node), clock=clock, **world)
        modem = SimModem(self.air, self.sim, clock, node, (500.0 + 700.0 * i, 0.0), extra_loss_db=20, sf=SF)
        Runner(board, cfg, LoraLink(modem, node, clock)).run(stop=self.stop.is_set)

    @property
    def error(self) -> str | None:
        return self.errors[0] if self.errors else None

    def start(self) -> "LoraCity":
        self.thread = threading.Thread(target=self._run, name="lora-air", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        # the actors stop at their next wait once the demo is over
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        try:
            self.sim.run(timeout_s=86400)  # the actors end at their next wait once stop is set
        except Exception as e:  # noqa: BLE001 - reported by the demo as one line
            self.errors.append(f"{type(e).__name__}: {e}")

    def _watch(self) -> None:
        self.stop.wait()
        self.sim.stopping = True

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
        self.sock.close()
        radios = [r for r in self.air.radios if r.name != "gw"]
        worst = max((self.air.max_duty(r) for r in radios), default=0.0)
        c = self.air.counts
        print(f"demo: LoRa air: {c['packets']} packets, {c['lost_collision']} lost to collisions; worst hour of "
              f"airtime {worst * 100:.2f} % for a node, {self.air.max_duty(self.gw_modem.radio) * 100:.2f} % for "
              f"the gateway's radio (limit 1 %)", file=sys.stderr)
