#!/usr/bin/env python3
# Gateway benchmark: end-to-end frames/s from UDP nodes through `citynode gateway` (a real
# process, durability on: WAL + synchronous=FULL + ACK after commit) to an MQTT subscriber,
# against the ceiling of one paho client publishing QoS 1 messages of the same size to the
# same mosquitto in the same run. Also latency p50/p99 (frame first sent -> delivered to the
# subscriber) at a fixed rate, gateway CPU seconds per 1,000 frames, and its RSS.
#
#   .venv/bin/python bench/gateway_bench.py                 # ~1 minute
#   .venv/bin/python bench/gateway_bench.py --flood-s 600   # plus RSS over a 10-minute flood
import argparse
import json
import multiprocessing
import os
import pathlib
import socket
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402

from gateway.keys import format_keys  # noqa: E402
from gateway.outputs import Envelope, Frame  # noqa: E402
from protocol import message  # noqa: E402
from tests.support.broker import Mosquitto, free_port  # noqa: E402
from tests.support.udpnode import UdpNode, make_frame  # noqa: E402

PREFIX = "bench"


def node_keys(n, prefix="bench"):
    return {f"{prefix}-{i:02d}": bytes([i + 1]) * 16 for i in range(n)}


def simulate_run(work, sim_keys, udp, frames, sub):
    # `citynode simulate` (the firmware's own sampling and sending code on simulated boards),
    # one process per node, as the sender. -> (frames, seconds until all were delivered)
    import subprocess
    sub.reset()
    t0 = time.perf_counter()
    procs = []
    for i, (node, key) in enumerate(sim_keys.items()):
        kf = work / f"sim-keys-{i}.toml"
        kf.write_text(format_keys({node: key}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "simulate", "--nodes", "1", "--frames", str(frames),
             "--to", f"udp://127.0.0.1:{udp}", "--keys", str(kf), "--state", str(work / "sim-state"),
             "--window", "64", "--timeout", "300"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL))
    ok = all(p.wait() == 0 for p in procs)
    total = frames * len(sim_keys)
    sub.wait_count(total, 60)
    return ok, len(sub.arrived), time.perf_counter() - t0


def up_payload_size():
    key = bytes(16)
    raw = make_frame(key, "bench-00", 1, 12345)
    m = message.decode(raw, lambda n: key)
    return len(Envelope(PREFIX, "gw-bench").messages(Frame("bench-00", m, raw, time.time(), time.time(),
                                                              "received", "udp 127.0.0.1:40000"))[0][1])


class Subscriber:
    def __init__(self, port):
        self.arrived = {}  # (node, seq) -> first arrival time
        self.count = 0
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub", clean_session=True)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/nodes/+/up", qos=1)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        while not self.c.is_connected():
            time.sleep(0.01)
        time.sleep(0.2)

    def _on_message(self, c, u, msg):
        now = time.time()
        if msg.topic.endswith("/ceiling/up"):
            with self.lock:
                self.count += 1
            return
        j = json.loads(msg.payload)
        with self.lock:
            self.count += 1
            self.arrived.setdefault((j["node"], j["seq"]), now)

    def wait_count(self, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.count < n:
            time.sleep(0.002)
        return self.count >= n

    def reset(self):
        with self.lock:
            self.count = 0
            self.arrived = {}


def _ceiling_publisher(port, n, size, window, out):
    acked = [0]
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-ceiling", clean_session=True)
    c.max_inflight_messages_set(0)
    c.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
    c.connect("127.0.0.1", port)
    while not c.is_connected():
        c.loop(0.05)
    payload = b"x" * size
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    sent = 0
    while acked[0] < n:
        while sent < n and sent - acked[0] < window:
            c.publish(f"{PREFIX}/nodes/ceiling/up", payload, qos=1)
            sent += 1
        c.loop(0.01)
    out.put((time.time() - (time.perf_counter() - t0), time.perf_counter() - t0, time.process_time() - cpu0))
    c.disconnect()


def ceiling(port, sub, n, size, window=1000):
    # One paho client in its own process (like the gateway, it shares no interpreter lock
    # with the subscriber), driven from one thread (the fastest way RECIPES.md found),
    # QoS 1, its own window below the 65535 message-id wrap. Timed to the last PUBACK and
    # to the subscriber's last delivery.
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    sub.reset()
    p = ctx.Process(target=_ceiling_publisher, args=(port, n, size, window, q))
    p.start()
    t_start, t_puback, cpu_s = q.get()
    p.join()
    sub.wait_count(n, 60)
    t_sub = time.time() - t_start
    return n / t_puback, n / t_sub, cpu_s / n * 1000


def proc_stats(pid):
    # CPU seconds and RSS of the gateway and its children (the publisher process)
    cpu, rss = _one_proc_stats(pid)
    for child in _children(pid):
        c_cpu, c_rss = _one_proc_stats(child)
        cpu += c_cpu
        rss += c_rss
    return cpu, rss


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _one_proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu_s, rss


def _sender(node, key, addr, count, start, rate, window, out):
    n = UdpNode(node, key, addr, window=window, resend_s=2.0)
    for s in range(start, start + count):  # build frames before the clock starts
        n.frame(s)
    ok = n.run(count, start=start, rate=rate, deadline_s=600)
    out.put((node, ok, n.sent, n.sent_at))


def send(keys, addr, count, start, rate_total, window):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    per_rate = rate_total / len(keys) if rate_total else None
    procs = [ctx.Process(target=_sender, args=(node, key, addr, count, start, per_rate, window, q))
             for node, key in keys.items()]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return results


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=20000, help="frames for the throughput run")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--window", type=int, default=128, help="unACKed frames per node")
    ap.add_argument("--latency-rate", type=int, default=1000, help="frames/s for the latency run")
    ap.add_argument("--latency-s", type=float, default=10.0)
    ap.add_argument("--flood-s", type=float, default=0.0, help="then flood this long, sampling RSS")
    ap.add_argument("--flood-rate", type=int, default=2000)
    ap.add_argument("--simulate-frames", type=int, default=1000,
                    help="frames per node for the run with `citynode simulate` as the sender (0: skip)")
    ap.add_argument("--publisher", choices=("process", "thread"), default="process",
                    help="[mqtt] publisher of the gateway under test")
    args = ap.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="citynode-bench-"))
    broker = Mosquitto(work / "mq").start()
    keys = node_keys(args.nodes)
    sim_keys = node_keys(args.nodes, "sim")
    (work / "keys.toml").write_text(format_keys({**keys, **sim_keys}))
    udp = free_port(socket.SOCK_DGRAM)
    (work / "gateway.toml").write_text(
        f'[gateway]\nid = "gw-bench"\ndata_dir = "var"\nlog_level = "warning"\nqueue_max = 20000\n'
        f'[mqtt]\nurl = "{broker.url}"\ntopic_prefix = "{PREFIX}"\npublisher = "{args.publisher}"\n'
        f'[[ingest]]\nkind = "udp"\nlisten = "127.0.0.1:{udp}"\n[nodes]\nkeys_file = "keys.toml"\n')
    import subprocess
    gw = subprocess.Popen([sys.executable, "-m", "tools.cli", "gateway", "--config", str(work / "gateway.toml")],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          stderr=open(work / "gateway.log", "wb"))
    addr = ("127.0.0.1", udp)
    try:
        time.sleep(1.5)
        sub = Subscriber(broker.port)
        size = up_payload_size()
        ceil_puback, ceil_sub, ceil_cpu = ceiling(broker.port, sub, args.frames, size)
        print(f"payload {size} bytes (the `up` JSON of one frame); gateway publisher = {args.publisher}")
        print(f"ceiling: one paho client, QoS 1: {ceil_puback:,.0f} msg/s to PUBACK, "
              f"{ceil_sub:,.0f} msg/s delivered to the subscriber; {ceil_cpu:.3f} CPU-s per 1,000 messages")

        # end-to-end throughput, durability on
        per_node = args.frames // args.nodes
        total = per_node * args.nodes
        sub.reset()
        cpu0, _ = proc_stats(gw.pid)
        t0 = time.perf_counter()
        results = send(keys, addr, per_node, 0, None, args.window)
        assert all(r[1] for r in results), "some frames were never ACKed"
        sub.wait_count(total, 120)
        elapsed = time.perf_counter() - t0
        cpu1, rss = proc_stats(gw.pid)
        got = len(sub.arrived)
        e2e = got / elapsed
        sent = sum(r[2] for r in results)
        print(f"end to end: {total} frames from {args.nodes} UDP nodes in {elapsed:.2f} s = {e2e:,.0f} frames/s "
              f"({got} delivered, {sent - total} retransmissions)")
        print(f"ratio to the one-client ceiling: {e2e / ceil_puback:.0%} (to PUBACK), "
              f"{e2e / ceil_sub:.0%} (delivered)")
        gw_cpu = (cpu1 - cpu0) / total * 1000
        print(f"gateway CPU: {gw_cpu:.3f} CPU-s per 1,000 frames ({gw_cpu / ceil_cpu:.1f}x the bare publisher's); "
              f"RSS {rss / 2**20:.1f} MiB")

        # latency at a fixed rate
        n_lat = int(args.latency_rate * args.latency_s) // args.nodes
        sub.reset()
        results = send(keys, addr, n_lat, per_node, args.latency_rate, args.window)
        sub.wait_count(n_lat * args.nodes, 60)
        lat = []
        for node, _ok, _sent, sent_at in results:
            for seq, t in sent_at.items():
                a = sub.arrived.get((node, seq))
                if a is not None:
                    lat.append((a - t) * 1000)
        print(f"latency at {args.latency_rate} frames/s ({len(lat)} frames): p50 {percentile(lat, 0.5):.1f} ms, "
              f"p99 {percentile(lat, 0.99):.1f} ms, max {max(lat):.1f} ms")
        _, rss = proc_stats(gw.pid)
        print(f"RSS after the runs: {rss / 2**20:.1f} MiB")

        if args.simulate_frames:
            ok, got, secs = simulate_run(work, sim_keys, udp, args.simulate_frames, sub)
            print(f"with `citynode simulate` as the sender ({args.nodes} processes, firmware code): {got} frames "
                  f"delivered in {secs:.2f} s = {got / secs:,.0f} frames/s ({'all ACKed' if ok else 'NOT all ACKed'}; "
                  f"the simulated nodes, not the gateway, set this pace)")

        if args.flood_s:
            start = per_node + n_lat
            stop_at = time.monotonic() + args.flood_s
            samples = []
            chunk = max(1, int(args.flood_rate * 30) // args.nodes)  # ~30 s per round
            while time.monotonic() < stop_at:
                send(keys, addr, chunk, start, args.flood_rate, args.window)
                start += chunk
                cpu, rss = proc_stats(gw.pid)
                samples.append(rss / 2**20)
                print(f"  flood {len(samples) * 30:4d} s: {start * args.nodes:,} frames, RSS {rss / 2**20:.1f} MiB",
                      flush=True)
            print(f"RSS over the flood: first {samples[0]:.1f} MiB, last {samples[-1]:.1f} MiB, "
                  f"max {max(samples):.1f} MiB")
    finally:
        gw.terminate()
        gw.wait(20)
        broker.stop()


if __name__ == "__main__":
    main()
