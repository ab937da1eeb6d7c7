# Simulated nodes for the demo: the real firmware (firmware.node.Node on the sim board)
# in threads, sending over UDP to a gateway, in compressed time. The world's clock runs
# FACTOR times faster than the wall (so a storm fits in seconds), while the link's resend
# timers run in real time (the gateway answers in real milliseconds, not world minutes).
import os
import threading
import time
from typing import Any

from firmware import config as node_config
from firmware.clock import Clock
from firmware.links import udp_link
from firmware.sim.board import Runner, SimBoard
from firmware.uplink import Pace

FACTOR = 480  # world seconds per wall second: 15 s of demo = 2 h of sewer


class CompressedClock:
    # the firmware clock interface (ms, sleep_ms, set_time, time_s), FACTOR times faster
    def __init__(self, factor: float = FACTOR) -> None:
        self.factor = factor
        self._t0 = time.monotonic()
        self._unix_offset = None

    def ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000 * self.factor)

    def sleep_ms(self, ms: int) -> None:
        if ms > 0:
            time.sleep(ms / 1000 / self.factor)

    def set_time(self, unix_s: int) -> None:
        self._unix_offset = unix_s - self.ms() // 1000

    def time_s(self) -> int | None:
        return None if self._unix_offset is None else self._unix_offset + self.ms() // 1000


def world_for(i: int) -> dict[str, Any]:
    # each shaft gets its own storm: runoff arrives a little later and peaks a little lower downstream
    return {"seed": 11 + i, "rain_start_s": 900 + 420 * i, "rain_rise_s": 2400,
            "rain_peak_mm": max(900, 2700 - 450 * i), "drain_tau_s": 1800}


def config_for(node: str, key: bytes, host: str, port: int) -> dict[str, Any]:
    return node_config.validate({
        "node": node, "key": key.hex(), "board": SimBoard.name, "link": {"kind": "udp", "host": host, "port": port},
        "interval_s": 300, "storm_interval_s": 30, "heartbeat_s": 900,
        "watchdog_ms": 600000,  # 10 world minutes = 1.25 wall seconds: covers a wall-time ACK wait
        "sleep": "light",
    })


class SimNode(threading.Thread):
    def __init__(self, index: int, node: str, key: bytes, gateway: tuple[str, int], flash_dir: str,
                 factor: float = FACTOR, stop: threading.Event | None = None) -> None:
        super().__init__(name=f"sim-{node}", daemon=True)
        self.node_id = node
        self.cfg = config_for(node, key, gateway[0], gateway[1])
        self.clock = CompressedClock(factor)
        os.makedirs(flash_dir, exist_ok=True)
        self.board = SimBoard(os.path.join(flash_dir, node), clock=self.clock, **world_for(index))
        self.stop_event = stop or threading.Event()
        self.runner = None
        self.error = None

    def make_link(self) -> Any:
        return udp_link(self.cfg["link"])

    def run(self) -> None:
        # the sim board's runner: the node's own loop, rebooted after resets and power cuts
        link = self.make_link()
        link.pace = Pace(Clock())  # resend timers in wall time
        self.runner = Runner(self.board, self.cfg, link)
        try:
            node = self.runner.run(stop=self.stop_event.is_set)
            if node is not None:
                node.uplink.buffer.close()
        except Exception as e:  # noqa: BLE001 - reported by the demo as one line
            self.error = f"{type(e).__name__}: {e}"
        finally:
            link.close()
