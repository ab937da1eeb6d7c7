# Flash wear of the offline buffer: sector erases per frame on real LittleFS (littlefs-python,
# littlefs 2.11 as in MicroPython 1.28) with the RP2 and ESP32 mount settings, against the
# simplest append-only store measured in the same run (one out-of-line file per frame, i.e. a
# sector per frame). Goal: at most 1 erase per frame at steady state.
#   .venv/bin/python bench/flash_bench.py [--frames 2000] [--size 100]
import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.buffer import Buffer  # noqa: E402
from tests.support.lfs import ESP32, RP2, LfsVolume, NorFlash  # noqa: E402


def frame(seq, size):
    return bytes([(seq * 7 + k) & 0xFF for k in range(size)])


def buffer_erases(geometry, frames, size, backlog):
    vol = LfsVolume(NorFlash(geometry), geometry, format=True)
    chip = vol.chip
    feeds = []
    buf = Buffer("/buffer.bin", 512, 512, vol.open, lambda: feeds.append(chip.erases), vol)
    seq = 0
    for _ in range(600):  # warm up past the folder's first compactions and splits
        buf.put(1, seq, frame(seq, size))
        buf.ack(1, seq)
        seq += 1
    e0 = chip.erases
    for _ in range(frames):
        buf.put(1, seq, frame(seq, size))
        buf.ack(1, seq)
        seq += 1
    steady = (chip.erases - e0) / frames
    e1 = chip.erases
    for _ in range(backlog):
        buf.put(1, seq, frame(seq, size))
        seq += 1
    put = (chip.erases - e1) / backlog
    feeds.clear()
    feeds.append(chip.erases)
    buf.ack(1, seq - 1, seq - 1)
    feeds.append(chip.erases)
    gap = max(b - a for a, b in zip(feeds, feeds[1:], strict=False))
    return steady, put, feeds[-1] - feeds[0], gap, max(chip.per_block.values()), len(chip.per_block)


def sector_per_frame(geometry, frames, size):
    # the same files made too big to inline: every frame takes a sector of its own
    vol = LfsVolume(NorFlash(geometry), geometry, format=True)
    vol.mkdir("/f")
    big = geometry["block_size"] // 8 + 1
    for seq in range(100):
        f = vol.open("/f/%08x" % seq, "wb")
        f.write(frame(seq, max(size, big)))
        f.close()
        vol.remove("/f/%08x" % seq)
    e0 = vol.chip.erases
    for seq in range(100, 100 + frames):
        f = vol.open("/f/%08x" % seq, "wb")
        f.write(frame(seq, max(size, big)))
        f.close()
        vol.remove("/f/%08x" % seq)
    return (vol.chip.erases - e0) / frames


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--size", type=int, default=100, help="frame bytes (a six-reading frame is about 100)")
    ap.add_argument("--backlog", type=int, default=300)
    a = ap.parse_args()
    for name, geometry in (("rp2", RP2), ("esp32", ESP32)):
        steady, put, ack, gap, most, blocks = buffer_erases(geometry, a.frames, a.size, a.backlog)
        ceiling = sector_per_frame(geometry, a.frames // 4, a.size)
        print("%-5s %d-byte frames: %.3f erases per frame at steady state (goal <= 1; a sector per frame "
              "measured %.2f: ratio %.2f); backlog of %d: %.3f per frame to store, %d to ACK at once, "
              "at most %d between two watchdog feeds; wear spread over %d sectors, the most erased %d times" % (
                  name, a.size, steady, ceiling, steady / ceiling, a.backlog, put, ack, gap, blocks, most))


if __name__ == "__main__":
    main()
