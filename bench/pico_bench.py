# The node on the emulated Raspberry Pi Pico (the real MicroPython v1.28.0 rp2 port on
# rp2040js, tools/rig/pico.py) through the storm scenario, with this script as its gateway
# on the USB console (every frame verified and ACKed):
#   free heap after the node started (the heap probe of tools/rig/pico.py);
#   cycle time: emulated CPU ms per storm cycle (the runner counts executed cycles) and the
#     cadence of the frames (uptime between frames);
#   flash sector erases per frame at steady state (the runner counts the boot ROM's erases),
#     against the same firmware buffer on littlefs-python with the RP2 mount settings
#     (bench/flash_bench.py) measured in this run;
#   frames per hour in the storm, against the sim board (firmware/sim: the same firmware, world,
#     seed and cadence in world time, virtual clock) measured in this run, as the reference.
# The world runs --speed times faster than the board's clock, so a storm takes minutes:
#   .venv/bin/python bench/pico_bench.py [--speed 60] [--minutes 3]
import argparse
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import cobs, message  # noqa: E402
from tools.provision import provision  # noqa: E402
from tools.rig import pico  # noqa: E402

SEED = 3
INTERVAL_WORLD_S = 300  # normal reporting interval, in world seconds
STORM_WORLD_S = 60  # storm interval, in world seconds
WARMUP_FRAMES = 10


def node_config(base, speed):
    # the Pico node: its intervals are the world's divided by the speed
    _p, cfg = provision("bench-1", str(base / "node"), str(base / "keys.toml"), board="rp2",
                        interval_s=max(1, round(INTERVAL_WORLD_S / speed)))
    cfg.update(storm_interval_s=max(1, round(STORM_WORLD_S / speed)), heartbeat_s=max(1, round(3600 / speed)))
    from firmware.config import DEFAULTS

    rise = DEFAULTS["thresholds"]["rise_mm_min"]  # mm per minute of the node's clock, which runs slow here
    cfg.setdefault("thresholds", {})["rise_mm_min"] = round(rise * speed)
    (base / "node" / "config.json").write_text(json.dumps(cfg))
    return cfg


def flashed_image(base):
    # a Pico flashed by `citynode flash`, powered off (the world does not run yet)
    path = base / "flashed.bin"
    rig = pico.PicoRig(path, power_on_open=False).start()
    try:
        proc = subprocess.run([sys.executable, "-m", "tools.cli", "flash", "--port", rig.port, "--node-dir",
                               str(base / "node"), "--timeout", "60"], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit("pico bench: citynode flash failed: " + proc.stderr[-800:])
    finally:
        rig.stop()
    return path


def free_heap(base, image):
    flash = base / "heap.bin"
    shutil.copyfile(image, flash)
    rig = pico.PicoRig(flash).start()
    try:
        return pico.free_heap_after_start(rig.port)
    finally:
        rig.stop()


def storm_on_pico(base, image, cfg, speed, minutes):
    import serial

    flash = base / "storm.bin"
    shutil.copyfile(image, flash)
    rain = 0.2 * minutes * 60 * speed  # the runoff arrives after a fifth of the run (world seconds)
    rig = pico.PicoRig(flash, world={"speed": speed, "seed": SEED, "rain_start_s": rain}).start()
    key = bytes.fromhex(cfg["key"])
    frames = []  # (world s at the node, emulated ms, busy ms, erases, programs)
    deframer = cobs.Deframer()
    try:
        port = serial.Serial(rig.port, 115200, timeout=0.2)
        end = minutes * 60 * 1000
        wall_end = time.monotonic() + minutes * 60 * 3 + 60  # bounded even if the board stalls
        while rig.emulated_ms < end and time.monotonic() < wall_end:
            for kind, body in deframer.feed(port.read(4096)):
                if kind != "frame":
                    continue
                d = message.decode(body, {cfg["node"]: key}.get)
                port.write(cobs.encode(message.encode_ack(key, d["node"], d["boot"], d["seq"])))
                c = rig.counters
                frames.append((d["uptime_ms"] * speed / 1000, d["uptime_ms"], c.get("busy_ms", 0),
                               c.get("erases", 0), c.get("programs", 0), d["boot"], d["seq"]))
        wear = rig.report()
        port.close()
    finally:
        rig.stop()
    return frames, wear, rain


def storm_on_sim(base, speed, minutes, rain):
    # the ceiling: the same firmware, world and seed on the sim board, cadence in world time
    from firmware import config
    from firmware.sim.board import Runner, SimBoard
    from firmware.sim.gateway import SimGateway
    from firmware.sim.link import SimLink

    folder = base / "sim"
    folder.mkdir()
    _p, cfg = provision("bench-sim", str(folder), str(base / "sim-keys.toml"), board="sim",
                        interval_s=INTERVAL_WORLD_S)
    cfg.update(storm_interval_s=STORM_WORLD_S, heartbeat_s=3600)
    cfg = config.validate(cfg)
    board = SimBoard(str(folder), seed=SEED, rain_start_s=rain)
    times = []
    gw = SimGateway({cfg["node"]: cfg["key_bytes"]}, sink=lambda m, d: times.append(d["uptime_ms"] / 1000))
    Runner(board, cfg, SimLink(board.world, board.clock, gw)).run(int(minutes * 60 * speed * 1000))
    return times


def lfs_erases_per_frame(frames):
    spec = importlib.util.spec_from_file_location("flash_bench", ROOT / "bench" / "flash_bench.py")
    fb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fb)
    steady, *_ = fb.buffer_erases(fb.RP2, frames, 100, 1)
    return steady


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--speed", type=float, default=60, help="world seconds per emulated second (%(default)s)")
    ap.add_argument("--minutes", type=float, default=3, help="emulated minutes of the storm run (%(default)s)")
    args = ap.parse_args()
    why = pico.check()
    if why:
        print("pico bench skipped: " + why)
        return 0
    base = pathlib.Path(tempfile.mkdtemp(prefix="pico-bench-"))
    try:
        t0 = time.monotonic()
        cfg = node_config(base, args.speed)
        image = flashed_image(base)
        free, used = free_heap(base, image)
        print(f"free heap after the node started: {free} B ({used} B used); "
              f"{free / (free + used):.2f} of the heap")
        frames, wear, rain = storm_on_pico(base, image, cfg, args.speed, args.minutes)
        wall = time.monotonic() - t0
        if len(frames) <= WARMUP_FRAMES + 2:
            print(f"pico bench: only {len(frames)} frames in the run; wear {wear}")
            return 1
        boots = {f[5] for f in frames}
        w0, w1 = frames[WARMUP_FRAMES], frames[-1]
        n = len(frames) - 1 - WARMUP_FRAMES
        erases = (w1[3] - w0[3]) / n
        programs = (w1[4] - w0[4]) / n
        lfs = lfs_erases_per_frame(400)
        print(f"flash: {erases:.2f} sector erases and {programs:.1f} page programs per frame at steady state "
              f"({n} frames); the same buffer on littlefs-python (RP2 settings): {lfs:.2f} erases per frame; "
              f"ratio {erases / lfs if lfs else float('inf'):.2f}")
        # the storm: the rising hour after the runoff arrives
        lo, hi = rain, rain + 3600
        storm = [f for f in frames if lo <= f[0] < hi]
        if len(storm) >= 2:
            busy = (storm[-1][2] - storm[0][2]) / (len(storm) - 1)
            gaps = [(b[1] - a[1]) for a, b in zip(storm, storm[1:], strict=False)]
            print(f"cycle time: {busy:.0f} emulated CPU ms per storm cycle (each reports); frames every "
                  f"{sum(gaps) / len(gaps):.0f} emulated ms (storm interval {cfg['storm_interval_s'] * 1000} ms); "
                  f"CPU busy {busy / (sum(gaps) / len(gaps)):.2f} of the time")
        sim = storm_on_sim(base, args.speed, args.minutes, rain)
        sim_storm = [t for t in sim if lo <= t < hi]
        span_h = (min(hi, frames[-1][0]) - lo) / 3600
        if span_h > 0:
            fph = len(storm) / span_h
            sim_fph = len([t for t in sim_storm if t < lo + span_h * 3600]) / span_h
            print(f"storm: {fph:.0f} frames per hour on the Pico, {sim_fph:.0f} on the sim board (same world, "
                  f"seed {SEED}, storm every {STORM_WORLD_S} world s); ratio {fph / sim_fph if sim_fph else 0:.2f}")
        # every frame of each boot arrived, once: no seq missing between the first and the last
        lost = dups = 0
        for b in boots:
            seqs = [f[6] for f in frames if f[5] == b]
            lost += max(seqs) - min(seqs) + 1 - len(set(seqs))
            dups += len(seqs) - len(set(seqs))
        print(f"run: {len(frames)} frames, boots {sorted(boots)}, world x{args.speed:g}, "
              f"{wear['ms'] / 1000:.0f} emulated s in {wall:.0f} wall s; resets {wear['resets']}, "
              f"watchdog resets {wear['watchdog_resets']}; frames lost {lost}, received twice {dups}")
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
