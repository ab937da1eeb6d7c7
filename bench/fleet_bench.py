#!/usr/bin/env python3
"""The fleet, in full (docs/fleet.md): a 3-server NATS JetStream cluster on 127.0.0.1 (R3,
fsync always), 3 gateways as real processes, 20 nodes each heard by 2 or 3 of them,
100,000 frames, and the relay feeding a real mosquitto. While frames flow: gateway gw-2 is
cut off from the cluster for 6 hours of node time (its [nats] points at a dead port; its
outbox fills) and then comes back and replays; one server and one gateway are killed
with kill -9 and restarted. At the end an independent reader of the stream and an
independent MQTT subscriber count each frame: the run passes with 0 lost, 0 duplicated.

Then the benchmark, in the same run: one gateway flooded over UDP with its frames going
into the R3 stream ([nats]), the same gateway going to mosquitto ([mqtt]), and a bare
nats-py publisher of messages of the same size, subject and message id: frames/s and
CPU per frame (the gateway process's run time from /proc).

  .venv/bin/python bench/fleet_bench.py                      # full: ~100,000 frames
  .venv/bin/python bench/fleet_bench.py --frames 10000       # smaller
  .venv/bin/python bench/fleet_bench.py --skip-acceptance    # the benchmark only
"""
import argparse
import collections
import json
import multiprocessing
import os
import pathlib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import paho.mqtt.client as mqtt  # noqa: E402
from gateway_bench import cpu_seconds, split, thread_cpu, up_payload_size  # noqa: E402

from gateway.files import write_private  # noqa: E402
from gateway.keys import format_keys  # noqa: E402
from protocol import message, senml  # noqa: E402
from tests.support.broker import Mosquitto, free_port  # noqa: E402
from tests.support.udpnode import HeardByMany  # noqa: E402
from tools import procs  # noqa: E402
from tools.natscluster import Cluster, stream_frames  # noqa: E402

PREFIX = "cn"
STREAM = "CN"


def node_keys(n):
    return {f"n{i:02d}": bytes([i + 1]) * 16 for i in range(n)}


class TimedNode(HeardByMany):
    # frames dated interval_s apart in node time (uptime), so "6 hours of node time" is a seq count
    interval_ms = 30_000

    def frame(self, seq):
        f = self.frames.get(seq)
        if f is None:
            f = self.frames[seq] = message.encode_data(
                self.key, self.node, self.boot, seq, 1000 + seq * self.interval_ms,
                [senml.record("l", round(0.25 + (seq % 500) / 1000, 3)), senml.record("b", 3.7)])
        return f


def _sender(node, key, gateways, count, rate, interval_ms, out):
    n = TimedNode(node, key, gateways, window=16, resend_s=1.0)
    n.interval_ms = interval_ms
    ok = n.run(count, rate=rate, deadline_s=3600)
    out.put((node, ok, n.sent))
    n.close()


class Counter:
    # the independent MQTT subscriber: a persistent session on P/nodes/+/up, counting each frame
    def __init__(self, port, client_id):
        self.seen = collections.Counter()
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/nodes/+/up", qos=1)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        while not self.c.is_connected():
            time.sleep(0.01)

    def _on_message(self, c, u, msg):
        j = json.loads(msg.payload)
        with self.lock:
            self.seen[j["node"], j["boot"], j["seq"]] += 1

    def total(self):
        with self.lock:
            return sum(self.seen.values())

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


class Proc:
    # `citynode gateway|relay --config FILE` as a process we can kill -9
    def __init__(self, kind, directory, text):
        self.kind = kind
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "config.toml"
        write_private(self.config, text)
        self.log = self.dir / f"{kind}.log"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.cli", self.kind, "--config", str(self.config)],
                                     cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                     stderr=open(self.log, "ab"))
        return self

    def rewrite(self, text):
        write_private(self.config, text)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        procs.stop(self.proc, 30)

    def outbox_depth(self, name="outbox.sqlite"):
        try:
            db = sqlite3.connect(self.dir / "var" / name, timeout=5)  # a reader (mode=ro would miss the WAL)
            try:
                return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error:
            return None


def nats_section(servers, extra=""):
    return (f'[nats]\nservers = [{", ".join(repr(u).replace(chr(39), chr(34)) for u in servers)}]\n'
            f'stream = "{STREAM}"\nsubject_prefix = "{PREFIX}"\nack_timeout_s = 5\nheartbeat_s = 1\n{extra}\n')


def gateway_text(gw_id, servers, udp, keys_file="keys.toml"):
    return (f'[gateway]\nid = "{gw_id}"\ndata_dir = "var"\nqueue_max = 50000\n\n{nats_section(servers)}'
            f'[[ingest]]\nkind = "udp"\nlisten = "127.0.0.1:{udp}"\n\n[nodes]\nkeys_file = "{keys_file}"\n')


def wait_udp(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        if proc.proc.poll() is not None:
            raise SystemExit(f"{proc.dir.name} exited: {proc.log.read_text()[-1000:]}")
        time.sleep(0.05)
    raise SystemExit(f"{proc.dir.name} did not bind UDP {port}")


def acceptance(work, args):
    keys = node_keys(args.nodes)
    per_node = args.frames // args.nodes
    total = per_node * args.nodes
    offline_seqs = int(args.offline_h * 3600 * 1000 / args.interval_ms)
    print(f"acceptance: {total} frames from {args.nodes} nodes ({per_node} each, one per {args.interval_ms / 1000:g} s "
          f"of node time: {per_node * args.interval_ms / 3.6e6:.1f} h), gw-2 offline for {args.offline_h:g} h of node "
          f"time ({offline_seqs} frames per node)", flush=True)
    cluster = Cluster(work / "nats").start()
    broker = Mosquitto(work / "mosquitto").start()
    counter = Counter(broker.port, "fleet-bench-counter")
    dead = f"nats://127.0.0.1:{free_port()}"
    gws, ports = [], []
    for i in range(3):
        ports.append(free_port(socket.SOCK_DGRAM))
        p = Proc("gateway", work / f"gw-{i}", gateway_text(f"gw-{i}", [dead] if i == 2 else cluster.urls, ports[i]))
        write_private(p.dir / "keys.toml", format_keys(keys))
        gws.append(p.start())
        wait_udp(ports[i], p)
    relay = Proc("relay", work / "relay", f'[relay]\nid = "relay-1"\ndata_dir = "var"\n\n{nats_section(cluster.urls)}'
                                          f'[mqtt]\nurl = "{broker.url}"\ntopic_prefix = "{PREFIX}"\n\n'
                                          '[nodes]\nkeys_file = "keys.toml"\n')
    write_private(relay.dir / "keys.toml", format_keys(keys))
    relay.start()
    addr = [("127.0.0.1", p) for p in ports]
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    senders = []
    for i, (node, key) in enumerate(keys.items()):
        heard = addr if i % 3 == 0 else [addr[i % 3], addr[(i + 1) % 3]]
        senders.append(ctx.Process(target=_sender, args=(node, key, heard, per_node, args.rate / args.nodes,
                                                         args.interval_ms, q)))
    t0 = time.monotonic()
    cpu0 = time.process_time()
    for s in senders:
        s.start()
    events = []

    def at(frames_sent, what):
        # when the nodes, sending at their paced rate, have sent this many frames (node time, not
        # what reached MQTT: the relay may lag)
        while time.monotonic() - t0 < frames_sent / args.rate:
            if not any(s.is_alive() for s in senders):
                return False
            time.sleep(0.05)
        events.append((round(time.monotonic() - t0, 1), counter.total(), what))
        print(f"  t={events[-1][0]:6.1f} s (~{frames_sent} frames sent), {events[-1][1]:6d} at MQTT: {what}",
              flush=True)
        return True

    # gw-2 back after its nodes' 6 hours, a server and a gateway killed along the way
    schedule = sorted([(offline_seqs * args.nodes, "back"), (int(total * 0.35), "server"),
                       (int(total * 0.6), "gateway")])
    for threshold, what in schedule:
        if what == "back":
            if at(threshold, f"gw-2 back after {args.offline_h:g} h of node time: replaying"):
                gws[2].stop()  # its pipeline commits what it queued: the outbox is what it replays
                print(f"  gw-2's outbox: {gws[2].outbox_depth()} frames", flush=True)
                gws[2].rewrite(gateway_text("gw-2", cluster.urls, ports[2]))
                gws[2].start()
                wait_udp(ports[2], gws[2])
        elif what == "server" and at(threshold, "kill -9 nats server n2"):
            cluster.kill9(1)
            time.sleep(2.0)
            cluster.start_server(1)
            events.append((round(time.monotonic() - t0, 1), counter.total(), "n2 restarted"))
        elif what == "gateway" and at(threshold, "kill -9 gateway gw-1"):
            gws[1].kill9()
            time.sleep(2.0)
            gws[1].start()
            wait_udp(ports[1], gws[1])
    results = [q.get() for _ in senders]
    for s in senders:
        s.join()
    sent_s = time.monotonic() - t0
    unacked = [r[0] for r in results if not r[1]]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and (counter.total() < total or any(g.outbox_depth() for g in gws)):
        time.sleep(0.2)
    time.sleep(2.0)  # a duplicate would arrive now
    elapsed = time.monotonic() - t0
    depths = [g.outbox_depth() for g in gws]
    relay_cpu = cpu_seconds(relay.proc.pid)  # the relay ran the whole time (the gateways were restarted)
    want = {(n, 1, s) for n in keys for s in range(per_node)}
    stream = stream_frames(cluster.urls, STREAM, timeout=120)
    mqtt_seen = dict(counter.seen)
    counter.close()
    relay.stop()
    for g in gws:
        g.stop()
    cluster.stop()
    broker.stop()

    def verdict(name, seen):
        lost = len(want - set(seen))
        dup = sum(c - 1 for c in seen.values() if c > 1)
        extra = len(set(seen) - want)
        print(f"  {name}: {len(seen)} distinct frames, {lost} lost, {dup} duplicated, {extra} unknown")
        return lost == 0 and dup == 0 and extra == 0

    print(f"acceptance: nodes done in {sent_s:.1f} s, all delivered in {elapsed:.1f} s "
          f"({total / elapsed:.0f} frames/s end to end); unacked nodes {unacked or 'none'}; outboxes at the end "
          f"{depths}; relay CPU {relay_cpu / total * 1e6:.0f} us per frame; this process's CPU "
          f"{time.process_time() - cpu0:.1f} s")
    ok = verdict("the stream (independent reader)", stream) & verdict("MQTT after the relay (independent "
                                                                      "subscriber)", mqtt_seen)
    print("acceptance: " + ("PASS: every frame exactly once" if ok and not unacked else "FAIL"), flush=True)
    return ok and not unacked


# ---------------------------------------------------------------- the benchmark


def _flood(node, key, addr, count, out):
    n = TimedNode(node, key, [addr], window=64, resend_s=2.0)
    for s in range(count):
        n.frame(s)
    out.put(n.run(count, deadline_s=600))
    n.close()


def gateway_run(work, name, text_fn, keys, per_node, depth_name="outbox.sqlite"):
    # one gateway process flooded by len(keys) node processes -> (frames/s until the outbox is empty, CPU us/frame)
    port = free_port(socket.SOCK_DGRAM)
    p = Proc("gateway", work / name, text_fn(port))
    write_private(p.dir / "keys.toml", format_keys(keys))
    p.start()
    wait_udp(port, p)
    time.sleep(1.5)  # connected
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_flood, args=(n, k, ("127.0.0.1", port), per_node, q)) for n, k in keys.items()]
    cpu0 = cpu_seconds(p.proc.pid)
    th0 = thread_cpu(p.proc.pid)
    t0 = time.perf_counter()
    for pr in procs:
        pr.start()
    ok = all(q.get() for _ in procs)
    for pr in procs:
        pr.join()
    while p.outbox_depth(depth_name):
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    time.sleep(0.6)  # the deletions of the last acked rows: part of the cost
    cpu = cpu_seconds(p.proc.pid) - cpu0
    n = per_node * len(keys)
    print(f"  {name}: {split(th0, thread_cpu(p.proc.pid), n)} per frame", flush=True)
    p.stop()
    if not ok:
        raise SystemExit(f"{name}: frames not ACKed; see {p.log}")
    return n / elapsed, cpu / n * 1e6


def _bare_nats(urls, n, size, out):
    # a bare nats-py publisher: the same subjects, message ids and payload size into its own R3 stream,
    # a window of 1000 unanswered publishes (as the gateway's), answers on one reply subscription
    import asyncio

    import nats

    from gateway.config import NatsSettings
    from gateway.natsout import ensure_stream, frame_subject, msg_id

    async def main():
        nc = await nats.connect(urls)
        s = NatsSettings(servers=tuple(urls), stream="BARE", subject_prefix="bare")
        await ensure_stream(nc.jetstream(), s)
        inbox = nc.new_inbox()
        done = [0]
        free = asyncio.Event()

        async def answer(msg):
            done[0] += 1
            free.set()

        await nc.subscribe(inbox + ".*", cb=answer)
        payload = b"x" * size
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        for i in range(n):
            while i - done[0] >= 1000:
                free.clear()
                await free.wait()
            await nc.publish(frame_subject("bare", "n00", 1, i), payload, reply=f"{inbox}.{i}",
                             headers={"Nats-Msg-Id": msg_id("n00", 1, i)})
        while done[0] < n:
            free.clear()
            await free.wait()
        out.put((n / (time.perf_counter() - t0), (time.process_time() - cpu0) / n * 1e6))
        await nc.close()

    asyncio.run(main())


def benchmark(work, args):
    keys = node_keys(args.bench_nodes)
    per_node = args.bench_frames // args.bench_nodes
    n = per_node * len(keys)
    size = up_payload_size()
    print(f"benchmark: {n} frames from {len(keys)} flooding nodes into one gateway; payload ~{size} bytes", flush=True)
    cluster = Cluster(work / "bench-nats").start()
    broker = Mosquitto(work / "bench-mosquitto").start()
    rows = []
    try:
        f, c = gateway_run(work, "bench-nats-gw", lambda port: gateway_text("gw-b1", cluster.urls, port), keys,
                           per_node)
        rows.append(("gateway -> R3 stream ([nats])", f, c))
        f, c = gateway_run(work, "bench-mqtt-gw", lambda port: (
            f'[gateway]\nid = "gw-b2"\ndata_dir = "var"\nqueue_max = 50000\n\n[mqtt]\nurl = "{broker.url}"\n'
            f'topic_prefix = "{PREFIX}"\n\n[forecast]\nenabled = false\n\n'
            f'[[ingest]]\nkind = "udp"\nlisten = "127.0.0.1:{port}"\n\n'
            '[nodes]\nkeys_file = "keys.toml"\n'), keys, per_node)
        rows.append(("gateway -> mosquitto ([mqtt])", f, c))
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_bare_nats, args=(cluster.urls, n, size, q))
        p.start()
        f, c = q.get()
        p.join()
        rows.append(("bare nats-py publisher -> R3 stream", f, c))
    finally:
        cluster.stop()
        broker.stop()
    bare = rows[2]
    print(f"{'path':38} {'frames/s':>9} {'CPU us/frame':>13}")
    for name, f, c in rows:
        print(f"{name:38} {f:9.0f} {c:13.0f}")
    print(f"benchmark: the gateway into the R3 stream costs {rows[0][2] / rows[1][2]:.2f}x the CPU per frame of its "
          f"MQTT path and {rows[0][2] / bare[2]:.2f}x the bare publisher's; it reaches {rows[0][1] / bare[1]:.2f}x "
          f"the bare publisher's rate and {rows[0][1] / rows[1][1]:.2f}x the MQTT path's", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--rate", type=float, default=800.0, help="frames/s of all nodes together (%(default)s)")
    ap.add_argument("--interval-ms", type=int, default=30_000, help="node time between frames (storm mode)")
    ap.add_argument("--offline-h", type=float, default=6.0, help="hours of node time gw-2 is cut off")
    ap.add_argument("--bench-frames", type=int, default=20_000)
    ap.add_argument("--bench-nodes", type=int, default=10)
    ap.add_argument("--skip-acceptance", action="store_true")
    ap.add_argument("--skip-benchmark", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        work = pathlib.Path(tmp)
        ok = True
        if not args.skip_acceptance:
            ok = acceptance(work, args)
        if not args.skip_benchmark:
            benchmark(work, args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
