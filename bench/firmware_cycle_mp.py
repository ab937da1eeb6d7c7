# MicroPython side of the firmware heap benchmark and test (run by bench/firmware_bench.py
# and tests/firmware/test_micropython.py): the real node, drivers, buffer and protocol on
# parts that allocate nothing themselves (as machine.I2C/UART in C do on a board), so
# every byte counted is the firmware's or the protocol's. No simulator code is loaded: this
# is the device's own code; what a cycle allocates (PEAK) and keeps (GROWTH) are counted in
# bytes (the board's heap budget is measured on the emulated Pico, hil_tests/test_port.py).
#   micropython firmware_cycle_mp.py FLASH_DIR CYCLES
import gc
import sys
import time

import micropython

from firmware import config
from firmware.node import Node
from protocol import message as msg

KEY = bytes(range(16))
# a BME280's registers after a forced conversion of the Bosch datasheet example (calibration
# at 0x88/0xE1, chip id 0x60, data at 0xF7..0xFE), so no simulator code is loaded
BME280_REGS = bytes.fromhex(
    "00" * 136 + "706b436718fc7d8e43d6d00b270b8c00f9ff8c3cf8c67017004b" + "00" * 46 + "60" + "00" * 16
    + "6a01001424031e" + "00" * 10 + "010025" + "0000655ac07eed007530" + "00")


class QuietClock:
    def __init__(self):
        self.now_ms = 0

    def ms(self):
        return self.now_ms

    def sleep_ms(self, ms):
        self.now_ms += ms

    def set_time(self, unix_s):
        pass

    def time_s(self):
        return None


class NoWatchdog:
    def feed(self):
        pass


class QuietBoard:
    # the board interface with nothing behind it that allocates (no simulator imported)
    name = "bench"

    def __init__(self, flash):
        import os

        try:
            os.mkdir(flash)
        except OSError:
            pass
        self.flash = flash
        self.clock = QuietClock()
        self.i2c_bus = QuietI2C(bytearray(BME280_REGS))
        self.ultrasonic = QuietUart()

    def path(self, name):
        return self.flash + "/" + name

    def open(self, path, mode="r"):
        return open(path, mode)

    def i2c(self, settings=None):
        return self.i2c_bus

    def sensor_uart(self, settings=None):
        return self.ultrasonic

    def battery_mv(self):
        return 3700

    def watchdog(self, ms):
        return NoWatchdog()

    def reset_cause(self):
        return "power_on"

    def sleep_ms(self, ms, light=True):
        self.clock.sleep_ms(ms)

    def log(self, text):
        pass


class QuietI2C:
    # register reads copy preset bytes into the caller's buffer; no allocation
    def __init__(self, regs):
        self.regs = regs

    def readfrom_mem_into(self, addr, reg, buf):
        r = self.regs
        for i in range(len(buf)):
            buf[i] = r[(reg + i) & 0xFF]

    def writeto_mem(self, addr, reg, buf):
        pass


class QuietUart:
    # an A02YYUW frame always waiting, copied byte by byte; no allocation
    def __init__(self):
        self.frame = bytearray(b"\xff\x0b\xb8\xc2")  # 3000 mm
        self.ready = True

    def any(self):
        if self.ready:
            return 4
        self.ready = True  # the next frame arrives while the caller waits
        return 0

    def readinto(self, buf):
        self.ready = False
        f = self.frame
        for i in range(4):
            buf[i] = f[i]
        return 4


class LoopbackLink:
    # takes frames, answers each send with one ACK that covers everything (pre-encoded)
    def __init__(self):
        self.ack = None
        self.pending = False
        self.empty = []
        self.replies = [None]
        self.sent = 0

    def send(self, message):
        self.sent += 1
        self.pending = True
        return True

    def poll(self, timeout_ms):
        if not self.pending:
            return self.empty
        self.pending = False
        self.replies[0] = self.ack
        return self.replies


def main(flash, cycles):
    cfg = config.validate({"node": "n1", "key": KEY.hex(), "buffer_slots": 512, "interval_s": 60,
                           "heartbeat_s": 60, "board": "bench"})
    board = QuietBoard(flash)
    link = LoopbackLink()
    node = Node(board, cfg, link)
    node.start()
    link.ack = msg.encode_ack(KEY, "n1", node.health.boot, 0, 0xFFFFFFFF)
    proto = [0]
    enc = msg.encode_data
    dec = msg.decode

    def encode_data(*a, **kw):
        t = micropython.mem_total()
        r = enc(*a, **kw)
        proto[0] += micropython.mem_total() - t
        return r

    def decode(m, key_for):
        t = micropython.mem_total()
        r = dec(m, key_for)
        proto[0] += micropython.mem_total() - t
        return r

    msg.encode_data = encode_data
    msg.decode = decode
    for _ in range(20):  # warm up: first frame carries info, sensors set up, health recorded
        node.step()
        node.sleep(60000)
    gc.collect()
    base = gc.mem_alloc()
    peak = total = ptotal = 0
    t0 = time.ticks_us()
    for _ in range(cycles):
        p0 = proto[0]
        t = micropython.mem_total()
        node.step()
        used = micropython.mem_total() - t
        p = proto[0] - p0
        peak = max(peak, used - p)
        total += used - p
        ptotal += p
        node.sleep(60000)
    us = time.ticks_diff(time.ticks_us(), t0)
    micropython.qstr_info()  # "qstr pool: n_pool=P, n_qstr=Q, ...": every name the code interned
    gc.collect()
    print("PEAK %d GROWTH %d MEAN %d PROTOCOL %d FRAMES %d SENT %d US_PER_CYCLE %d LIVE %d HEAP_USED %d" % (
        peak, gc.mem_alloc() - base, total // cycles, ptotal // cycles, node.seq, link.sent, us // cycles,
        node.uplink.buffer.live, gc.mem_alloc()))


main(sys.argv[1], int(sys.argv[2]))
