# Firmware benchmark: heap bytes and wall time of one sample-encode-send cycle on the
# MicroPython VM (goal: under 8 KB, no growth over 10,000 cycles), and frames/s of one
# simulated node on CPython, against the bare protocol encoder measured in the same run.
#   .venv/bin/python bench/firmware_bench.py [--cycles 10000] [--frames 3000]
import argparse
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import message as msg  # noqa: E402
from protocol.senml import record  # noqa: E402
from tests.firmware.test_micropython import DEVICE_HEAP  # noqa: E402
from tests.support import mpvm  # noqa: E402

KEY = bytes(range(16))


def micropython_cycle(cycles):
    with tempfile.TemporaryDirectory() as d:
        tree = pathlib.Path(d) / "device"
        failures = mpvm.compile_tree(tree)
        if failures:
            raise SystemExit("mpy-cross failed:\n" + "\n".join(failures))
        env = dict(os.environ, MICROPYPATH=str(tree))
        p = subprocess.run([mpvm.micropython_binary(), "-X", "heapsize=" + DEVICE_HEAP,
                            str(ROOT / "bench" / "firmware_cycle_mp.py"), str(pathlib.Path(d) / "flash"), str(cycles)],
                           capture_output=True, text=True, env=env, cwd=d, timeout=1800)
        if p.returncode:
            raise SystemExit(p.stdout + p.stderr)
        words = p.stdout.splitlines()[-1].split()
        return dict(zip(words[0::2], map(int, words[1::2]), strict=True))


def encode_rate(seconds=1.0):
    recs = [record("t", 21.53), record("h", 55.5), record("p", 101325), record("l", 0.25), record("d", 2.75),
            record("b", 3.69921875)]
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        msg.encode_data(KEY, "sew-07", 1, n, n * 1000, recs)
        n += 1
    return n / (time.perf_counter() - t0)


class Acker(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = False

    def run(self):
        cum = {}
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            d = msg.decode(data, {"sew-07": KEY}.get)
            k = d["boot"]
            cum[k] = max(cum.get(k, -1), d["seq"])
            self.sock.sendto(msg.encode_ack(KEY, "sew-07", d["boot"], d["seq"]), addr)


def node_rate(frames):
    # one simulated node (firmware Node on the sim board) sending over UDP to an ACKing receiver,
    # driven by the simulators' own loop (firmware/sim/run.py drive, as citynode simulate)
    from firmware import config
    from firmware.sim.board import SimBoard
    from firmware.sim.run import drive

    acker = Acker()
    acker.start()
    with tempfile.TemporaryDirectory() as d:
        cfg = config.validate({"node": "sew-07", "key": KEY.hex(), "interval_s": 60, "heartbeat_s": 60,
                               "link": {"kind": "udp", "host": "127.0.0.1", "port": acker.port}})
        t0 = time.perf_counter()
        result = drive([(SimBoard(d), cfg)], frames, None, 16, 120000)[0]
        wall = time.perf_counter() - t0
    acker.stop = True
    acker.join(1)
    assert result[4] == 0, result  # every frame acknowledged
    return frames / wall, result[5]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=10000)
    ap.add_argument("--frames", type=int, default=3000)
    a = ap.parse_args()
    f = micropython_cycle(a.cycles)
    print(f"MicroPython VM (heap {DEVICE_HEAP}), {a.cycles} cycles of sample + encode + buffer + send + ACK:")
    print(f"  firmware heap per cycle: peak {f['PEAK']} B, mean {f['MEAN']} B (goal < 8192 B)")
    print(f"  protocol encode+decode per cycle: {f['PROTOCOL']} B  -> total {f['MEAN'] + f['PROTOCOL']} B")
    print(f"  heap growth over {a.cycles} cycles: {f['GROWTH']} B; wall time {f['US_PER_CYCLE']} us per cycle")
    print(f"  heap in use with code, 512-slot buffer and node: {f['HEAP_USED']} B")
    enc = encode_rate()
    rate, resent = node_rate(a.frames)
    print(f"CPython: one simulated node over UDP: {rate:.0f} frames/s ({resent} resent); bare encode_data "
          f"{enc:.0f} frames/s; node/encode ratio {rate / enc:.2f}")


if __name__ == "__main__":
    main()
