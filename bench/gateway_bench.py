#!/usr/bin/env python3
"""Gateway benchmark: `citynode gateway` as a real process (durability on: WAL,
synchronous=FULL, ACK after commit) fed by UDP node processes, forwarding to a real
mosquitto and a subscriber, against one bare paho client publishing QoS 1 messages of
the same size to the same broker in the same run.

Lines with a ratio:
  CPU per frame vs the bare publisher's CPU per message, at saturation and at 50, 500
  and 2,000 frames/s (the bare publisher paced at the same rates; goal <= 1.5x);
  end to end vs the one-client ceiling (goal >= 0.9x where a core is spare);
  latency p50/p99 at 1,000 frames/s with 0, 5 and 20 ms fsync (an LD_PRELOAD shim,
  bench/fsync_delay.c, built with gcc here; goal p99 < 100 ms);
  RSS (goal < 60 MiB) and idle CPU.

  citynode bench gateway                          # about 2 minutes
  .venv/bin/python bench/gateway_bench.py --flood-s 600   # plus RSS over a 10-minute flood
  .venv/bin/python bench/gateway_bench.py --profile       # plus a py-spy cost table per stage

CPU is counted from the kernel's per-thread run time (/proc/PID/task/*/schedstat, ns) of
the gateway and its publisher child, so other jobs on the machine change rates more
than they change CPU per frame.
"""
import argparse
import collections
import json
import multiprocessing
import os
import pathlib
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402

from gateway.files import write_private  # noqa: E402
from gateway.keys import format_keys  # noqa: E402
from gateway.outputs import Envelope, Frame  # noqa: E402
from protocol import message  # noqa: E402
from tests.support.broker import Mosquitto, free_port  # noqa: E402
from tests.support.udpnode import UdpNode, make_frame  # noqa: E402
from tools import procs  # noqa: E402

PREFIX = "bench"
PACED_RATES = (50, 500, 2000)
LATENCY_FSYNC_MS = (0, 5, 20)


def node_keys(n, prefix="bench"):
    return {f"{prefix}-{i:02d}": bytes([i + 1]) * 16 for i in range(n)}


def up_payload_size():
    key = bytes(16)
    raw = make_frame(key, "bench-00", 1, 12345)
    m = message.decode(raw, lambda n: key)
    return len(Envelope(PREFIX, "gw-bench").messages(Frame("bench-00", m, raw, time.time(), time.time(),
                                                              "received", "udp 127.0.0.1:40000"))[0][1])


# ---------------------------------------------------------------- measuring a process


def _tasks(pid):
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def _children(pid):
    out = []
    for tid in _tasks(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_seconds(pid):
    # run time of every thread of pid and of its children (the publisher process), in s
    total = 0
    for p in [pid, *_children(pid)]:
        for tid in _tasks(p):
            try:
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total / 1e9


def thread_cpu(pid):
    # {thread name: run time in s} over pid and its children; the gateway names its
    # threads (gateway/osthread.py): cn-pipeline (which reads the UDP sockets too), cn-mqtt, cn-checkpoint
    out = collections.Counter()
    for p in [pid, *_children(pid)]:
        for tid in _tasks(p):
            try:
                with open(f"/proc/{p}/task/{tid}/comm") as f:
                    name = f.read().strip()
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    out[name if name.startswith("cn-") else "other"] += int(f.read().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                pass
    return out


def split(before, after, frames):
    # "pipeline 52 + mqtt 30 + udp 12 + other 3 us"
    d = {k[3:] if k.startswith("cn-") else k: (after[k] - before.get(k, 0)) / frames * 1e6 for k in after}
    return " + ".join(f"{k} {v:.0f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v >= 0.5) + " us"


def rss_bytes(pid):
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def wakeups(pid):
    # voluntary context switches of all threads: how often the process went to sleep
    total = 0
    for p in [pid, *_children(pid)]:
        for tid in _tasks(p):
            try:
                with open(f"/proc/{p}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


# ---------------------------------------------------------------- the subscriber


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
        deadline = time.monotonic() + 10
        while not self.c.is_connected() and time.monotonic() < deadline:
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
            time.sleep(0.005)
        return self.count >= n

    def reset(self):
        with self.lock:
            self.count = 0
            self.arrived = {}

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


# ---------------------------------------------------------------- the bare publisher


def _bare_publisher(port, runs, size, window, out):
    # One paho client driven from one thread by paho's own loop(), unlimited paho
    # in-flight and our own window of `window` unacknowledged (the fastest plain way
    # paho offers). runs: [(rate or None, messages)]. Paced runs sleep in loop() until the
    # next message is due (no busy polling). -> [(msg/s to the last PUBACK, CPU-s per msg)]
    acked = [0]
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-ceiling", clean_session=True)
    c.max_inflight_messages_set(0)
    c.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
    c.connect("127.0.0.1", port)
    while not c.is_connected():
        c.loop(0.05)
    payload = b"x" * size
    results = []
    for rate, n in runs:
        acked[0] = 0
        sent = 0
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        while acked[0] < n:
            due = n if rate is None else min(n, int((time.perf_counter() - t0) * rate) + 1)
            while sent < due and sent - acked[0] < window:
                c.publish(f"{PREFIX}/nodes/ceiling/up", payload, qos=1)
                sent += 1
            if rate is not None and sent < n:
                timeout = max(0.0, t0 + sent / rate - time.perf_counter())
            else:
                timeout = 0.01
            c.loop(timeout)
        results.append((n / (time.perf_counter() - t0), (time.process_time() - cpu0) / n))
    out.put(results)
    c.disconnect()


def bare_publisher(port, sub, runs, size):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    sub.reset()
    p = ctx.Process(target=_bare_publisher, args=(port, runs, size, 1000, q))
    p.start()
    results = q.get()
    p.join()
    sub.wait_count(sum(n for _, n in runs), 60)
    return results


# ---------------------------------------------------------------- senders


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


# ---------------------------------------------------------------- the gateway under test


def build_shim(work):
    # -> path of fsync_delay.so, or None when there is no C compiler
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    so = work / "fsync_delay.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(so), str(ROOT / "bench" / "fsync_delay.c"), "-ldl"],
                   check=True)
    return so


class GatewayRun:
    def __init__(self, work, name, broker, keys, publisher, fsync_ms=0, shim=None, forecast=True):
        self.dir = work / name
        self.dir.mkdir()
        write_private(self.dir / "keys.toml", format_keys(keys))
        self.udp = free_port(socket.SOCK_DGRAM)
        self.addr = ("127.0.0.1", self.udp)
        pub = f'publisher = "{publisher}"\n' if publisher else ""
        (self.dir / "gateway.toml").write_text(
            f'[gateway]\nid = "gw-bench"\ndata_dir = "var"\nlog_level = "info"\nqueue_max = 20000\n'
            f'[mqtt]\nurl = "{broker.url}"\ntopic_prefix = "{PREFIX}"\n{pub}'
            f'[[ingest]]\nkind = "udp"\nlisten = "127.0.0.1:{self.udp}"\n[nodes]\nkeys_file = "keys.toml"\n'
            + ("" if forecast else "[forecast]\nenabled = false\n"))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if fsync_ms:
            env.update(LD_PRELOAD=str(shim), FSYNC_DELAY_MS=str(fsync_ms))
        self.log = self.dir / "gateway.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "gateway", "--config",
                                      str(self.dir / "gateway.toml")], cwd=ROOT, env=env,
                                     stderr=open(self.log, "wb"))
        self.pid = self.proc.pid
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gateway exited: {self.log.read_text()[-1000:]}")
            if "mqtt: connected" in self.log.read_text(errors="replace"):
                time.sleep(0.3)
                return
            time.sleep(0.05)
        raise SystemExit(f"gateway did not connect: {self.log.read_text()[-1000:]}")

    def cpu(self):
        return cpu_seconds(self.pid)

    def threads(self):
        return thread_cpu(self.pid)

    def rss(self):
        return rss_bytes(self.pid)

    def stop(self):
        procs.stop(self.proc, 30)

    def commit_stats(self):
        # "... N frames in M group commits" from the log line at stop
        for line in reversed(self.log.read_text(errors="replace").splitlines()):
            if "group commits" in line:
                words = line.split()
                i = words.index("group")
                return int(words[i - 5].replace(",", "")), int(words[i - 1].replace(",", ""))
        return None


def run_frames(gw, sub, keys, start, per_node, rate, window, settle_s=0.6):
    # -> (frames, seconds to the last delivery, gateway CPU-s, latencies ms, retransmissions)
    # gw.last_split: CPU per frame by thread
    total = per_node * len(keys)
    sub.reset()
    th0 = gw.threads()
    cpu0 = gw.cpu()
    t0 = time.perf_counter()
    results = send(keys, gw.addr, per_node, start, rate, window)
    if not all(r[1] for r in results):
        raise SystemExit(f"some frames were never ACKed; see {gw.log}")
    sub.wait_count(total, 120)
    elapsed = time.perf_counter() - t0
    time.sleep(settle_s)  # PUBACKed rows are deleted in a later commit: part of the cost
    cpu = gw.cpu() - cpu0
    gw.last_split = split(th0, gw.threads(), max(1, len(sub.arrived)))
    lat = []
    for node, _ok, _sent, sent_at in results:
        for seq, t in sent_at.items():
            a = sub.arrived.get((node, seq))
            if a is not None:
                lat.append((a - t) * 1000)
    return len(sub.arrived), elapsed, cpu, lat, sum(r[2] for r in results) - total


def others_cpu(broker):
    # CPU-s so far of the broker, this process (the subscriber) and reaped children (senders)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cpu_seconds(broker.proc.pid), time.process_time(), children.ru_utime + children.ru_stime


def others_since(before, broker, n):
    now = others_cpu(broker)
    return {"broker": (now[0] - before[0]) / n, "subscriber": (now[1] - before[1]) / n,
            "senders": (now[2] - before[2]) / n}


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


# ---------------------------------------------------------------- py-spy cost table

STAGES = [  # (stage, substring of a py-spy frame); the innermost matching frame decides
    ("ACK", "UdpLink.send"), ("receive", "UdpLink.drain"), ("receive", "Pipeline._poll"), ("receive", "Inbox."),
    ("receive", "Pipeline.submit"),
    ("decode and verify", "protocol/cose.py"), ("decode and verify", "protocol/fast.py"),
    ("decode and verify", "protocol/message.py"), ("decode and verify", "protocol/cbor.py"),
    ("dedup", "gateway/dedup.py"),
    ("SenML checks and dating (conform, timing)", "gateway/conform.py"),
    ("SenML checks and dating (conform, timing)", "gateway/timing.py"),
    ("forecast output", "gateway/forecast.py"),
    ("envelope JSON", "gateway/outputs.py"), ("envelope JSON", "protocol/senml.py"),
    ("ACK", "gateway/acks.py"), ("ACK", "_send_acks"), ("ACK", "_send_commands"),
    ("insert and commit", "Store.commit"), ("checkpoint (own thread)", "_checkpoint_loop"),
    ("publish", "publish_outbox"), ("publish", "Client.publish"), ("publish", "Reader.after"),
    ("publish", "Forwarder.offer"), ("PUBACK and delete", "take_pubacks"), ("PUBACK and delete", "read_all"),
    ("PUBACK and delete", "loop_read"), ("PUBACK and delete", "_on_outbox_puback"),
    ("PUBACK and delete", "_hand_over"), ("PUBACK and delete", "take_acked"), ("PUBACK and delete", "_deleted"),
    ("MQTT socket writes", "_flush"), ("MQTT socket writes", "loop_write"),
    ("MQTT loop (select, misc)", "Forwarder"), ("MQTT loop (select, misc)", "gateway/mqtt.py"),
    ("MQTT loop (select, misc)", "pubproc"),
    ("counters and node state", "gateway/stats.py"),
    ("pipeline loop (queue, linger)", "Pipeline._run"), ("pipeline other", "gateway/pipeline.py"),
]


def stage_table(raw_path, us_per_frame):
    tot = collections.Counter()
    for line in open(raw_path):
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack:
            continue
        stage = "other (interpreter, threads)"
        for frame in reversed(stack.split(";")):
            hit = next((st for st, pat in STAGES if pat in frame), None)
            if hit:
                stage = hit
                break
        tot[stage] += int(n)
    s = sum(tot.values()) or 1
    return [(st, n / s, n / s * us_per_frame) for st, n in tot.most_common()]


def profile(gw, sub, keys, start, per_node, rate, window, work, label):
    spy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        print("  (py-spy not installed: pip install py-spy)")
        return start
    out = work / f"profile-{label}.txt"
    duration = max(2, int(per_node * len(keys) / (rate or 5000)) + 2)
    p = subprocess.Popen([spy, "record", "--pid", str(gw.pid), "--subprocesses", "--format", "raw", "--rate", "500",
                          "--duration", str(duration), "-o", str(out)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    got, secs, cpu, _lat, _re = run_frames(gw, sub, keys, start, per_node, rate, window)
    p.wait(duration + 30)
    us = cpu / got * 1e6
    print(f"cost per stage at {'saturation' if rate is None else f'{rate} frames/s'} "
          f"({us:.1f} us CPU per frame; py-spy samples, {out}):")
    for st, share, st_us in stage_table(out, us):
        print(f"  {st:32s} {share:6.1%} {st_us:7.1f} us")
    return start + per_node


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20000, help="frames for the saturation run")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--window", type=int, default=128, help="unACKed frames per node")
    ap.add_argument("--paced-s", type=float, default=4.0, help="seconds per paced rate (50, 500, 2000/s)")
    ap.add_argument("--latency-rate", type=int, default=1000, help="frames/s for the latency runs")
    ap.add_argument("--latency-s", type=float, default=5.0)
    ap.add_argument("--idle-s", type=float, default=3.0)
    ap.add_argument("--flood-s", type=float, default=0.0, help="then flood this long, sampling RSS")
    ap.add_argument("--flood-rate", type=int, default=2000)
    ap.add_argument("--forecast", choices=("on", "off"), default="on",
                    help="[forecast] of the gateway under test (it keeps every level reading of 40 minutes)")
    ap.add_argument("--publisher", choices=("process", "thread"), default=None,
                    help="[mqtt] publisher of the gateway under test (default: the gateway's default)")
    ap.add_argument("--fsync-runs", type=int, default=1, help="0: skip the runs with fsync latency added")
    ap.add_argument("--profile", action="store_true", help="py-spy cost table per stage at saturation and 500/s")
    args = ap.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="citynode-bench-"))
    broker = Mosquitto(work / "mq").start()
    keys = node_keys(args.nodes)
    shim = build_shim(work)
    sub = Subscriber(broker.port)
    size = up_payload_size()
    gws = []
    try:
        print(f"machine: {os.cpu_count()} cores, load average {loadavg()} at the start; payload {size} bytes "
              f"(the `up` JSON of one frame); publisher = {args.publisher or 'default'}")
        runs = [(None, args.frames)] + [(r, max(20, int(r * args.paced_s))) for r in PACED_RATES]
        others0 = others_cpu(broker)
        bare = bare_publisher(broker.port, sub, runs[:1], size)
        ceil_others = others_since(others0, broker, args.frames)
        bare += bare_publisher(broker.port, sub, runs[1:], size)
        ceil_rate, ceil_cpu = bare[0]
        print(f"ceiling: one bare paho client, QoS 1, {ceil_rate:,.0f} msg/s to PUBACK; CPU per message: "
              + ", ".join(f"{c * 1e6:.0f} us at {'saturation' if r is None else f'{r}/s'}"
                          for (r, _n), (_rate, c) in zip(runs, bare, strict=True)))

        gw = GatewayRun(work, "gw", broker, keys, args.publisher, forecast=args.forecast == "on")
        gws.append(gw)
        time.sleep(1.0)
        w0, c0 = wakeups(gw.pid), gw.cpu()
        time.sleep(args.idle_s)
        idle_cpu, idle_wake = (gw.cpu() - c0) / args.idle_s, (wakeups(gw.pid) - w0) / args.idle_s
        print(f"idle: {idle_cpu * 1000:.2f} ms CPU per second, {idle_wake:.1f} wake-ups per second")

        start = 0
        per_node = args.frames // args.nodes
        others0 = others_cpu(broker)
        got, secs, cpu, _lat, retx = run_frames(gw, sub, keys, start, per_node, None, args.window)
        e2e_others = others_since(others0, broker, got)
        start += per_node
        e2e = got / secs
        print(f"CPU per frame at saturation: {cpu / got * 1e6:.1f} us = {cpu / got / ceil_cpu:.2f}x the bare "
              f"publisher's {ceil_cpu * 1e6:.1f} us (goal <= 1.5x); by thread: {gw.last_split}")
        print(f"end to end: {got} frames in {secs:.2f} s = {e2e:,.0f} frames/s = {e2e / ceil_rate:.2f}x the "
              f"one-client ceiling of {ceil_rate:,.0f} msg/s (goal >= 0.9x with a core to spare; "
              f"{retx} retransmissions)")
        ceil_total = ceil_cpu + ceil_others["broker"] + ceil_others["subscriber"]
        e2e_total = cpu / got + sum(e2e_others.values())
        print(f"why, on {os.cpu_count()} busy cores: CPU per message of everything in the run: ceiling "
              f"{ceil_total * 1e6:.0f} us (publisher {ceil_cpu * 1e6:.0f} + broker {ceil_others['broker'] * 1e6:.0f} "
              f"+ subscriber {ceil_others['subscriber'] * 1e6:.0f}), end to end {e2e_total * 1e6:.0f} us (gateway "
              f"{cpu / got * 1e6:.0f} + UDP senders {e2e_others['senders'] * 1e6:.0f} + broker "
              f"{e2e_others['broker'] * 1e6:.0f} + subscriber {e2e_others['subscriber'] * 1e6:.0f}): with no core "
              f"idle the ratio cannot pass {ceil_total / e2e_total:.2f}")
        for (rate, _n), (_r, bare_cpu) in zip(runs[1:], bare[1:], strict=True):
            n = max(1, int(rate * args.paced_s) // args.nodes)
            got, secs, cpu, _lat, _ = run_frames(gw, sub, keys, start, n, rate, args.window)
            start += n
            tbg = " (ThingsBoard IoT Gateway 3.8.5: 450 us)" if rate == 500 else ""
            print(f"CPU per frame at {rate} frames/s: {cpu / got * 1e6:.1f} us = {cpu / got / bare_cpu:.2f}x the "
                  f"bare publisher's {bare_cpu * 1e6:.1f} us at {rate}/s{tbg}; by thread: {gw.last_split}")
        n_lat = int(args.latency_rate * args.latency_s) // args.nodes
        got, secs, cpu, lat, _ = run_frames(gw, sub, keys, start, n_lat, args.latency_rate, args.window)
        start += n_lat
        latency = {0: (lat, cpu / got)}
        rss = gw.rss()
        if args.profile:
            start = profile(gw, sub, keys, start, per_node, None, args.window, work, "saturation")
            start = profile(gw, sub, keys, start, int(500 * 6) // args.nodes, 500, args.window, work, "500")

        if args.flood_s:
            stop_at = time.monotonic() + args.flood_s
            samples = []
            chunk = max(1, int(args.flood_rate * 30) // args.nodes)  # ~30 s per round
            while time.monotonic() < stop_at:
                send(keys, gw.addr, chunk, start, args.flood_rate, args.window)
                start += chunk
                samples.append(gw.rss() / 2**20)
                print(f"  flood {len(samples) * 30:4d} s: {start * args.nodes:,} frames, RSS {samples[-1]:.1f} MiB",
                      flush=True)
            print(f"RSS over the flood: first {samples[0]:.1f} MiB, last {samples[-1]:.1f} MiB, "
                  f"max {max(samples):.1f} MiB = {max(samples) / samples[0]:.2f}x the first")
        gw.stop()
        batches = {0: gw.commit_stats()}

        if shim is None:
            print("fsync latency runs skipped: no C compiler (gcc) to build bench/fsync_delay.c")
        for ms in LATENCY_FSYNC_MS[1:] if shim and args.fsync_runs else ():
            g = GatewayRun(work, f"gw-fsync{ms}", broker, keys, args.publisher, fsync_ms=ms, shim=shim)
            gws.append(g)
            got, secs, cpu, _lat, _ = run_frames(g, sub, keys, 0, args.frames // 4 // args.nodes, None, args.window)
            sat = got / secs
            got, secs, cpu, lat, _ = run_frames(g, sub, keys, args.frames, n_lat, args.latency_rate, args.window)
            latency[ms] = (lat, cpu / got, sat)
            g.stop()
            batches[ms] = g.commit_stats()
        for ms, v in latency.items():
            lat = v[0]
            b = batches.get(ms)
            extra = f"; {b[0] / b[1]:.1f} frames per group commit" if b and b[1] else ""
            if len(v) > 2:
                extra += f"; saturation {v[2]:,.0f} frames/s"
            p99 = percentile(lat, 0.99)
            print(f"latency at {args.latency_rate} frames/s, fsync +{ms} ms: p50 {percentile(lat, 0.5):.1f} ms, "
                  f"p99 {p99:.1f} ms = {p99 / 100:.2f}x the 100 ms bound; CPU {v[1] * 1e6:.0f} us per frame{extra}")
        print(f"RSS: {rss / 2**20:.1f} MiB = {rss / (60 * 2**20):.2f}x the 60 MiB bound "
              f"(gateway and publisher child after the runs)")
        print(f"machine load average at the end: {loadavg()}")
    finally:
        for g in gws:
            if g.proc.poll() is None:
                g.stop()
        sub.close()
        broker.stop()


if __name__ == "__main__":
    main()
