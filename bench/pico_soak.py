# A soak of the node on the emulated Raspberry Pi Pico (the real MicroPython v1.28.0 rp2 port
# on rp2040js, tools/rig/pico.py), with this script as its gateway on the USB console: every
# frame verified and ACKed, except during gateway outages; power cuts at random moments and
# in the middle of flash writes. Run by hand (not in CI):
#   .venv/bin/python bench/pico_soak.py [--minutes 30] [--interval 5] [--seed 1]
# It prints: frames made (highest seq + 1 per boot) and delivered, lost (a seq of a boot that
# never arrived, the frame a cut tore before it was stored excepted: the node counts it torn),
# duplicated (the same boot and seq with other bytes: a real duplicate; resends of the same
# bytes are at-least-once and counted apart), resets by cause (cuts excluded), outages drained.
# The emulated Pico's link is its USB console: a gateway by host name needs Wi-Fi, which the
# emulator lacks (CYW43); that part of the soak runs on the sim year (bench/year_bench.py).
import argparse
import json
import pathlib
import random
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pico_bench import flashed_image  # noqa: E402
from protocol import cobs, message  # noqa: E402
from tools.provision import provision  # noqa: E402
from tools.rig import pico  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--interval", type=int, default=5, help="node interval, s (%(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    base = pathlib.Path(tempfile.mkdtemp(prefix="pico-soak-"))
    _p, cfg = provision("soak-1", str(base / "node"), str(base / "keys.toml"), board="rp2", interval_s=a.interval)
    cfg.update(heartbeat_s=a.interval)
    (base / "node" / "config.json").write_text(json.dumps(cfg))
    for attempt in range(3):  # citynode flash on a loaded machine can time out: flash again
        try:
            image = flashed_image(base)
            break
        except SystemExit as e:
            print("pico soak: flash attempt %d failed: %s" % (attempt + 1, str(e)[-200:]), flush=True)
    else:
        raise SystemExit("pico soak: citynode flash failed three times")
    flash = base / "soak.bin"
    shutil.copyfile(image, flash)
    key = bytes.fromhex(cfg["key"])
    total_s = a.minutes * 60
    # three outages of 2 to 4 minutes and a power cut every 2 to 4 minutes, half during a flash write
    outages = sorted((s, s + rnd.uniform(120, 240)) for s in (total_s * f for f in (0.15, 0.45, 0.75)))
    cuts = []
    t = rnd.uniform(60, 180)
    while t < total_s - 120:
        cuts.append((t, rnd.random() < 0.5))
        t += rnd.uniform(120, 240)
    aimed_total = sum(1 for c in cuts if c[1])
    got = {}  # (boot, seq) -> frame bytes
    resent = dup = 0
    import serial

    rig = pico.PicoRig(flash).start()
    t0 = time.monotonic()
    deframer = cobs.Deframer()
    port = serial.Serial(rig.port, 115200, timeout=0.2)
    done_cuts = 0
    try:
        while (now := time.monotonic() - t0) < total_s:
            if cuts and now >= cuts[0][0]:
                _, aimed = cuts.pop(0)
                n = len(rig.events)
                if aimed:
                    rig.cut_during_flash_write()
                    try:
                        rig.wait_event(lambda e: e["ev"] == "power_cut", 60, start=n)
                    except TimeoutError:
                        rig.power_cut()
                else:
                    rig.power_cut()
                time.sleep(1)
                rig.power_on()
                done_cuts += 1
            down = any(s <= now < e for s, e in outages)
            for kind, body in deframer.feed(port.read(4096)):
                if kind != "frame":
                    continue
                d = message.decode(body, {cfg["node"]: key}.get)
                k = (d["boot"], d["seq"])
                if k in got:
                    if got[k] == body:
                        resent += 1
                    else:
                        dup += 1
                got.setdefault(k, body)
                if not down:
                    port.write(cobs.encode(message.encode_ack(key, d["node"], d["boot"], d["seq"])))
        # the end: the gateway answers until the backlog is drained (bounded)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            for kind, body in deframer.feed(port.read(4096)):
                if kind == "frame":
                    d = message.decode(body, {cfg["node"]: key}.get)
                    got.setdefault((d["boot"], d["seq"]), body)
                    port.write(cobs.encode(message.encode_ack(key, d["node"], d["boot"], d["seq"])))
        wear = rig.report()
        boots = [e for e in rig.events if e["ev"] == "boot"]
    finally:
        port.close()
        rig.stop()
    per_boot = {}
    for b, s in got:
        per_boot.setdefault(b, set()).add(s)
    lost = sum(max(ss) + 1 - len(ss) for ss in per_boot.values())
    made = sum(max(ss) + 1 for ss in per_boot.values())
    reasons = {}
    for e in boots:
        reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    not_cuts = sum(n for r, n in reasons.items() if r not in ("power_on",))
    print("pico soak: %.0f min, interval %d s, %d power cuts (%d aimed at flash writes), outages %s" % (
        a.minutes, a.interval, done_cuts, aimed_total,
        ", ".join("%.0f-%.0f s" % o for o in outages)))
    print("frames made %d, delivered %d, lost %d, duplicated %d (resends of the same bytes %d), boots %d" % (
        made, len(got), lost, dup, resent, len(per_boot)))
    print("boots by reason %s: resets other than the cuts %d; erases %d" % (reasons, not_cuts, wear.get("erases", 0)))


if __name__ == "__main__":
    main()
