# The offline buffer on real LittleFS (littlefs-python, the littlefs 2.11 that MicroPython
# 1.28 vendors) with the RP2 and ESP32 mount settings: sector erases per frame, erases
# between two watchdog feeds, a power cut before every single flash write, a full
# filesystem, and frames left by the single-file ring of 0.1.0.
# Firmware 0.1.0's ring file measured here: ~37 erases per frame at steady state and ~3000
# for one cumulative ACK of a 200-frame backlog, with no feed in between.
import struct

import pytest

from firmware.buffer import Buffer
from firmware.health import WAKE
from protocol.cobs import crc16
from tests.support.lfs import ESP32, RP2, LfsVolume, NorFlash

PATH = "/buffer.bin"


def frame(boot, seq, size=100):
    return bytes([(boot * 31 + seq * 7 + k) & 0xFF for k in range(size)])


def new_volume(geometry=RP2):
    return LfsVolume(NorFlash(geometry), geometry, format=True)


def open_buffer(vol, slots=512, feed=None, reserve_blocks=8):
    return Buffer(PATH, slots, 256, vol.open, feed, vol, reserve_blocks)


def contents(buf):
    out = {}
    pos = 0
    while True:
        slot, pos = buf.oldest(pos)
        if slot < 0:
            return out
        pos += 1
        key = (buf.boot[slot], buf.seq[slot])
        assert key not in out, "a frame is in the buffer twice"
        out[key] = buf.frame(slot)


@pytest.mark.parametrize("geometry,size", [(RP2, 100), (RP2, 160), (ESP32, 100)], ids=["rp2", "rp2-160B", "esp32"])
def test_steady_state_costs_at_most_one_erase_per_frame(geometry, size):
    vol = new_volume(geometry)
    chip = vol.chip
    buf = open_buffer(vol)
    seq = 0
    for _ in range(600):  # past the first compactions and splits of the folder's metadata
        buf.put(1, seq, frame(1, seq, size))
        buf.ack(1, seq)
        seq += 1
    before = chip.erases
    n = 1000
    for _ in range(n):  # the gateway answers every frame
        buf.put(1, seq, frame(1, seq, size))
        buf.ack(1, seq)
        seq += 1
    per_frame = (chip.erases - before) / n
    assert per_frame <= 1.0, per_frame
    assert buf.live == 0 and buf.counts == {"torn": 0, "dropped": 0, "oversize": 0, "flash": 0}


def test_backlog_and_cumulative_ack_feed_the_watchdog_between_erases():
    vol = new_volume()
    chip = vol.chip
    marks = []
    buf = open_buffer(vol, feed=lambda: marks.append(chip.erases))
    before = chip.erases
    for seq in range(300):  # an outage: 300 frames wait
        buf.put(1, seq, frame(1, seq))
    assert (chip.erases - before) / 300 <= 1.0
    marks.clear()
    marks.append(chip.erases)
    assert buf.ack(1, 299, cum=299) == 300  # the link is back: one ACK covers the backlog
    marks.append(chip.erases)
    gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    assert max(gaps) <= 2, gaps  # 2 x 400 ms worst case erase, far below the RP2's 8.3 s
    assert marks[-1] - marks[0] <= 30
    buf.close()
    marks.clear()
    reopened = open_buffer(vol, feed=lambda: marks.append(chip.erases))
    assert reopened.live == 0


# ---------------------------------------------------------------- power cuts

SCENARIO = [("put", 1, 5), ("put", 1, 6), ("ack", 1, 3, None), ("put", 1, 7), ("put", 1, 8),
            ("ack", 1, 8, 6), ("put", 1, 9), ("put", 1, 10), ("put", 1, 11), ("put", 1, 12),
            ("put", 1, 13), ("put", 1, 14), ("put", 1, 15), ("ack", 1, 12, None), ("put", 2, 0),
            ("ack", 1, 15, 15), ("put", 2, 1)]
SLOTS = 8  # small, so that the scenario wraps the ring and drops the oldest frame


def base_volume():
    vol = new_volume()
    buf = open_buffer(vol, SLOTS)
    for seq in range(5):
        buf.put(1, seq, frame(1, seq))
    buf.ack(1, 1, cum=1)
    return vol


def apply(buf, op):
    if op[0] == "put":
        buf.put(op[1], op[2], frame(op[1], op[2]))
    else:
        buf.ack(op[1], op[2], op[3])


def reference_states():
    vol = base_volume()
    buf = open_buffer(vol, SLOTS)
    states = [contents(buf)]
    start = vol.chip.writes
    erases = vol.chip.erases
    for op in SCENARIO:
        apply(buf, op)
        states.append(contents(buf))
    return states, vol.chip.writes - start, vol.chip.erases - erases


def test_power_cut_before_any_flash_write_loses_and_doubles_nothing():
    states, writes, erases = reference_states()
    assert writes > 30 and erases >= 1  # cuts also land inside a metadata compaction
    for torn in (False, True):
        for cut in range(writes):
            vol = base_volume()
            chip = vol.chip
            buf = open_buffer(vol, SLOTS)
            chip.cut_at = chip.writes + cut
            chip.torn = torn
            at = None
            for j, op in enumerate(SCENARIO):
                apply(buf, op)  # on a dead chip every write fails: the buffer must not raise
                if chip.dead:
                    at = j
                    break
            assert at is not None, (cut, "the scenario never reached that write")
            after = open_buffer(LfsVolume(chip.revived()), SLOTS)  # mounts, or raises
            got = contents(after)
            pre, post = states[at], states[at + 1]
            where = "cut before write %d (%s) in %r" % (cut, "torn" if torn else "clean", SCENARIO[at])
            for key in got:
                assert key in pre or key in post, where + ": a frame from nowhere %r" % (key,)
                assert got[key] == frame(*key), where + ": frame %r corrupt" % (key,)
            for key in pre:
                if key in post:
                    assert key in got, where + ": frame %r lost" % (key,)
            after.put(3, 0, frame(3, 0))  # and the buffer goes on working
            assert contents(after)[(3, 0)] == frame(3, 0)


def test_full_filesystem_drops_oldest_frames_and_never_raises():
    geometry = dict(RP2, block_count=24)
    vol = new_volume(geometry)
    junk = vol.open("/junk", "wb")
    junk.write(bytes(15 * 4096))  # other files fill most of the flash
    junk.close()
    buf = open_buffer(vol, reserve_blocks=0)  # no reserve: the filesystem itself says ENOSPC
    stored = 0
    for seq in range(80):  # no ACK: the link is down
        if buf.put(1, seq, frame(1, seq)) >= 0:
            stored += 1
    assert buf.counts["dropped"] > 0 and buf.counts["flash"] == 0  # full: older frames made room
    assert stored == 80 and buf.live + buf.counts["dropped"] == 80
    newest = contents(buf)
    assert list(newest) == [(1, s) for s in range(80 - buf.live, 80)]
    assert all(v == frame(*k) for k, v in newest.items())
    again = open_buffer(vol, reserve_blocks=0)  # full to the last block: start frees one, oldest first
    kept = contents(again)
    gone = len(newest) - again.live
    assert list(kept) == list(newest)[gone:] and again.counts["dropped"] == gone
    assert all(v == newest[k] for k, v in kept.items())


def old_ring_file(vol, slots, frames):
    # firmware 0.1.0's buffer.bin: magic c7 01, >IIIH wc boot seq len, CRC-16, frame
    f = vol.open(PATH, "wb")
    for i in range(slots):
        rec = bytearray(256)
        if i in frames:
            wc, boot, seq, live = frames[i]
            body = frame(boot, seq)
            struct.pack_into(">IIIH", rec, 2, wc, boot, seq, len(body))
            crc = crc16(body, crc16(bytes(rec[2:16])))
            rec[0:2] = b"\xc7\x01" if live else b"\x00\x00"
            rec[16] = crc >> 8
            rec[17] = crc & 0xFF
            rec[18 : 18 + len(body)] = body
        f.write(rec)
    f.close()


def test_frames_of_the_old_ring_file_move_over_oldest_first():
    vol = new_volume()
    old_ring_file(vol, 8, {0: (9, 4, 20, True), 1: (10, 4, 21, False), 6: (7, 4, 18, True), 7: (8, 4, 19, True)})
    buf = open_buffer(vol)
    assert list(contents(buf)) == [(4, 18), (4, 19), (4, 20)]  # the ACKed slot (magic zeroed) stays out
    assert all(v == frame(*k) for k, v in contents(buf).items())
    with pytest.raises(OSError):
        vol.stat(PATH)
    assert list(contents(open_buffer(vol))) == [(4, 18), (4, 19), (4, 20)]


def esp32_with_code(files=28):
    # ESP32_GENERIC's 2 MB vfs partition (512 blocks) holding the firmware's .mpy files (28
    # modules, each over the 128-byte inline limit, so each takes blocks of its own) and, to
    # keep the test short, one big file standing for the first ~400 frames of an outage
    vol = new_volume(ESP32)
    for i in range(files):
        f = vol.open("/code%02d.mpy" % i, "wb")
        f.write(bytes([i]) * 1600)
        f.close()
    f = vol.open("/other", "wb")
    f.write(bytes(400 * 4096))
    f.close()
    return vol


def save_state(vol):
    from firmware.state import State

    st = State("/state.json", vol.open, vol)
    st.load()
    # what start() writes at every boot, with a gateway-set interval and a deep-sleep wake kept
    st.save(boot=st.data.get("boot", 0) + 1, unhealthy=1, set={"interval_ms": 60000, "base": [300, 30, 1, 2, 3]},
            wake={name: i * 1000003 for i, name in enumerate(WAKE)})


def test_esp32_frames_past_the_inline_limit_leave_room_for_the_boot_state():
    # A frame over 126 B (frame + CRC past the 128-byte inline limit at the ESP32 port's cache
    # size) takes a 4 KB block of its own; 512 of them exceed the 2 MB partition. Filled to
    # the last block, the next boot's state.save failed with ENOSPC: a reset every 30 s.
    vol = esp32_with_code()
    buf = open_buffer(vol)
    for seq in range(150):  # an outage of days: no ACK
        assert buf.put(1, seq, frame(1, seq, 200)) >= 0
    assert buf.counts["flash"] == 0 and buf.counts["dropped"] > 0
    assert vol.statvfs()[3] >= buf.reserve_blocks  # the buffer stopped short of the last blocks
    kept = contents(buf)
    assert list(kept) == [(1, s) for s in range(150 - buf.live, 150)]  # the newest frames, in order
    save_state(vol)  # the next boot writes its counter (into the reserve)
    again = open_buffer(vol)  # and its buffer restores the reserve: a frame or two older go
    assert list(contents(again)) == list(kept)[len(kept) - again.live :] and again.live >= len(kept) - 3
    # the bytes it holds (a health figure, SPEC 6.1 info 8), counted in RAM and read back at start
    assert buf.bytes == sum(len(v) + 2 for v in kept.values())
    assert again.bytes == sum(len(v) + 2 for v in contents(again).values())
    save_state(vol)


def test_a_flash_filled_by_older_firmware_is_given_room_at_start():
    # a filesystem filled to ENOSPC by frame files (firmware before the reserve): the buffer's
    # start frees the reserve by dropping the oldest frames (counted), so the boot state fits
    vol = esp32_with_code()
    vol.mkdir("/buffer.bin.d")
    seq = 0
    while True:
        body = frame(1, seq, 200)
        try:
            f = vol.open("/buffer.bin.d/%08x%08x" % (1, seq), "wb")
            f.write(body + bytes([crc16(body) >> 8, crc16(body) & 0xFF]))
            f.close()
        except OSError:
            break
        seq += 1
    with pytest.raises(OSError):
        save_state(vol)  # what main did at the next boot
    buf = open_buffer(vol)
    assert buf.counts["dropped"] > 0 and vol.statvfs()[3] >= buf.reserve_blocks
    save_state(vol)
    assert buf.put(2, 0, frame(2, 0, 200)) >= 0
