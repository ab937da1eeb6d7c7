# The offline buffer: a bounded ring of frames in one flash file of fixed-size slots,
# so it survives resets and power loss. A frame stays until the gateway's ACK covers it.
#
# slot = magic(2) wc(4) boot(4) seq(4) len(2) crc(2) frame(len) ... padding to slot_bytes
# wc is a write counter; crc = CRC-16 over wc..len and the frame. A write torn by a power
# cut fails its CRC and the slot counts as empty; an ACK overwrites the magic with zeros
# (a 2-byte write, which NOR flash can do without an erase). Writes go round the ring in
# order, so ring order from the slot after the newest is oldest-first; when the writer
# reaches a frame still unacknowledged, that oldest frame is dropped and counted.
import struct
from array import array

from protocol.cobs import crc16

MAGIC = b"\xc7\x01"
HEADER = 18
_HDR = ">IIIH"  # wc, boot, seq, len (after the magic)


class Buffer:
    def __init__(self, path, slots=512, slot_bytes=256, opener=open):
        self.path = path
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.max_frame = slot_bytes - HEADER
        self._open = opener
        self._buf = bytearray(slot_bytes)
        self._mv = memoryview(self._buf)
        self.wc = array("I", bytes(4 * slots))  # 0: empty slot
        self.boot = array("I", bytes(4 * slots))
        self.seq = array("I", bytes(4 * slots))
        self.live = 0
        self.next = 0
        self.counts = {"torn": 0, "dropped": 0, "oversize": 0}
        self._f = None
        self._scan()

    def _file(self):
        if self._f is None:
            try:
                self._f = self._open(self.path, "r+b")
            except OSError:
                self._f = self._open(self.path, "w+b")
        return self._f

    def _scan(self):
        f = self._file()
        newest = 0
        for i in range(self.slots):
            f.seek(i * self.slot_bytes)
            n = f.readinto(self._buf)
            if not n or n < 2 or self._buf[0:2] != MAGIC:
                continue
            if n < HEADER:
                self.counts["torn"] += 1
                continue
            wc, boot, seq, length = struct.unpack_from(_HDR, self._buf, 2)
            crc = (self._buf[16] << 8) | self._buf[17]
            if HEADER + length > n or crc16(self._mv[HEADER : HEADER + length], crc16(self._mv[2:16])) != crc:
                self.counts["torn"] += 1
                continue
            self.wc[i] = wc
            self.boot[i] = boot
            self.seq[i] = seq
            self.live += 1
            if wc > newest:
                newest = wc
                self.next = (i + 1) % self.slots
        self._wc = newest

    def put(self, boot, seq, frame):
        # Store a frame durably before it is sent. Returns the slot, or -1 if it cannot fit.
        if len(frame) > self.max_frame:
            self.counts["oversize"] += 1
            return -1
        i = self.next
        if self.wc[i]:
            self.counts["dropped"] += 1
            self.live -= 1
            self.wc[i] = 0
        self._wc += 1
        b = self._buf
        b[0:2] = MAGIC
        struct.pack_into(_HDR, b, 2, self._wc, boot, seq, len(frame))
        b[HEADER : HEADER + len(frame)] = frame
        crc = crc16(frame, crc16(self._mv[2:16]))
        b[16] = crc >> 8
        b[17] = crc & 0xFF
        f = self._file()
        f.seek(i * self.slot_bytes)
        f.write(self._mv[0 : HEADER + len(frame)])
        f.flush()
        self.wc[i] = self._wc
        self.boot[i] = boot
        self.seq[i] = seq
        self.live += 1
        self.next = (i + 1) % self.slots
        return i

    def _tombstone(self, i):
        f = self._file()
        f.seek(i * self.slot_bytes)
        f.write(b"\x00\x00")
        self.wc[i] = 0
        self.live -= 1

    def ack(self, boot, seq, cum=None):
        # Remove seq and, with cum, every seq <= cum of that boot. Returns frames removed.
        removed = 0
        for i in range(self.slots):
            if self.wc[i] and self.boot[i] == boot and (self.seq[i] == seq or (cum is not None and self.seq[i] <= cum)):
                self._tombstone(i)
                removed += 1
        if removed:
            self._file().flush()
        return removed

    def oldest(self, start=0):
        # Slot of the oldest live frame at or after ring position `start` (0 = oldest), or -1.
        # Returns (slot, position) so callers can walk the backlog without allocating.
        n = self.slots
        for k in range(start, n):
            i = (self.next + k) % n
            if self.wc[i]:
                return i, k
        return -1, n

    def frame(self, i):
        f = self._file()
        f.seek(i * self.slot_bytes)
        f.readinto(self._buf)
        length = (self._buf[14] << 8) | self._buf[15]
        return bytes(self._mv[HEADER : HEADER + length])

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
