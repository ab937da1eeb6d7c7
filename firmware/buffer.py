# The offline buffer: every frame waits in flash until the gateway's ACK covers it, so it
# survives resets and power cuts. Built for LittleFS on NOR flash (RP2, ESP32):
#
# - one small file per frame in the folder <path>.d, named by boot and seq ("%08x%08x"),
#   holding the frame and its CRC-16. A file up to littlefs's inline limit (512 bytes on
#   RP2, 128 on ESP32: min(cache_size, block_size / 8), lib/littlefs/lfs2.c lfs2_init) lives
#   inside its folder's metadata log: writing it appends two commits there and erases
#   nothing; the log is compacted (one sector erase) only every few frames.
# - nothing is ever rewritten in place (littlefs copies a file's tail on every write into
#   its middle: the ring file this replaces cost ~37 sector erases per frame);
# - an ACK deletes the file (one more commit): the ACK state is the folder, not the data;
# - only the newest file can be torn by a power cut (writes are sequential): its CRC is
#   checked at start, every frame's when it is read.
# The watchdog is fed between file operations of long loops (a cumulative ACK can delete
# hundreds of files; a sector erase takes 45 ms, up to 400 ms, interrupts off on RP2).
#
# Slots are RAM indices (0..slots-1) in write order, as the node's per-slot bookkeeping
# expects; when all are taken, the oldest frame is dropped and counted.
#
# Room for the rest: a frame file past the inline limit takes a whole 4 KB block, so on an
# ESP32 (2 MB partition, 512 blocks, frames over 126 B) 512 slots need more blocks than
# there are. The buffer keeps `reserve_blocks` free for state.json, its .tmp and metadata
# compactions: it reads the free blocks (os.statvfs: a littlefs traversal,
# extmod/vfs_lfsx.c) when its own count says they may be running low (it assumes every
# frame took a block since the last reading), and drops the oldest frames (counted) while
# fewer are free, at start too (a flash filled by older firmware).
import os
from array import array

from protocol.cobs import crc16


def _nofeed():
    pass


class Buffer:
    def __init__(self, path, slots=512, slot_bytes=256, opener=open, feed=None, fs=None, reserve_blocks=8):
        # path: where the old single-file buffer lived; frames go to the folder path + ".d".
        # fs: the os functions used (listdir/ilistdir, remove, mkdir, stat, statvfs); default os.
        # reserve_blocks: filesystem blocks the buffer leaves free for everything else
        self.path = path
        self.dir = path + ".d"
        self.slots = slots
        self.max_frame = slot_bytes
        self._open = opener
        self._fs = fs or os
        self.feed = feed or _nofeed
        self._buf = bytearray(slot_bytes + 2)  # a frame and its CRC, as read from flash
        self._mv = memoryview(self._buf)
        self._crc = bytearray(2)
        self.wc = array("I", bytes(4 * slots))  # write order, 0: empty slot
        self.boot = array("I", bytes(4 * slots))
        self.seq = array("I", bytes(4 * slots))
        self.size = array("H", bytes(2 * slots))  # bytes on flash per slot (frame + CRC)
        self.bytes = 0  # of all live frames
        self.reserve_blocks = reserve_blocks
        self._room = 0  # frames that may still be put before the free blocks are read again
        self.live = 0
        self.next = 0
        self._wc = 0
        self._last = None  # (slot, frame) of the frame last put, kept in RAM until sent
        self.counts = {"torn": 0, "dropped": 0, "oversize": 0, "flash": 0}
        self._scan()

    # ------------------------------------------------------------ files

    def _name(self, boot, seq):
        return "%s/%08x%08x" % (self.dir, boot, seq)

    def _remove(self, name):
        try:
            self._fs.remove(name)
        except OSError:  # already gone (a cut between an ACK's delete and our bookkeeping)
            pass

    def _write(self, name, frame):
        crc = crc16(frame)
        self._crc[0] = crc >> 8
        self._crc[1] = crc & 0xFF
        f = self._open(name, "wb")
        try:
            f.write(frame)
            f.write(self._crc)
        finally:
            f.close()  # littlefs commits the file here, all or nothing

    def _read(self, name):
        # -> frame length in self._buf, or -1 when the file is missing, torn or corrupt
        try:
            f = self._open(name, "rb")
        except OSError:
            return -1
        try:
            n = f.readinto(self._buf)
        finally:
            f.close()
        if not n or n < 3:
            return -1
        m = self._mv
        if crc16(m[0 : n - 2]) != (m[n - 2] << 8) | m[n - 1]:
            return -1
        return n - 2

    # ------------------------------------------------------------ start

    def _entries(self):
        # -> (name, bytes) of each file in the folder (made if missing); bytes 0 where the
        # listing has no sizes. MicroPython's ilistdir puts no list of every name on the heap.
        fs = self._fs
        try:
            fs.mkdir(self.dir)
        except OSError:  # exists
            pass
        if hasattr(fs, "ilistdir"):
            for e in fs.ilistdir(self.dir):  # (name, type, inode[, size])
                yield e[0], e[3] if len(e) > 3 else 0
        else:
            for name in fs.listdir(self.dir):
                yield name, 0

    def _sort(self, n):
        # insertion sort of slots 0..n-1 by (boot, seq): littlefs lists names in order, so
        # this is one pass there
        boot = self.boot
        seq = self.seq
        size = self.size
        for i in range(1, n):
            bi = boot[i]
            si = seq[i]
            zi = size[i]
            j = i - 1
            while j >= 0 and (boot[j] > bi or (boot[j] == bi and seq[j] > si)):
                boot[j + 1] = boot[j]
                seq[j + 1] = seq[j]
                size[j + 1] = size[j]
                j -= 1
            boot[j + 1] = bi
            seq[j + 1] = si
            size[j + 1] = zi

    def _scan(self):
        # the frames on flash into slots 0..n-1, oldest first; no watchdog to feed yet (the
        # node arms it after this)
        n = 0
        boot = self.boot
        seq = self.seq
        size = self.size
        for name, nbytes in self._entries():
            if len(name) != 16:
                self._remove(self.dir + "/" + name)  # not ours (or a tool's leftover)
                continue
            try:
                b = int(name[0:8], 16)
                s = int(name[8:16], 16)
            except ValueError:
                self._remove(self.dir + "/" + name)
                continue
            if n == self.slots:  # more frames than slots (the config shrank): counted and dropped
                self._remove(self.dir + "/" + name)
                self.counts["dropped"] += 1
                continue
            boot[n] = b
            seq[n] = s
            size[n] = nbytes
            n += 1
        self._sort(n)
        if n and self._read(self._name(boot[n - 1], seq[n - 1])) < 0:
            self._remove(self._name(boot[n - 1], seq[n - 1]))  # the write a power cut tore
            self.counts["torn"] += 1
            n -= 1
        for i in range(n):
            self.wc[i] = i + 1
            self.bytes += size[i]
        self._wc = n
        self.live = n
        self.next = n % self.slots
        self._make_room()
        try:
            self._fs.stat(self.path)
        except OSError:
            return
        from firmware import buffer_v0  # unacknowledged frames of 0.1.0's single-file ring

        buffer_v0.migrate(self)

    # ------------------------------------------------------------ the node's interface

    def put(self, boot, seq, frame):
        # Store a frame durably before it is sent. Returns the slot, or -1 if it cannot be
        # stored (too big, or the filesystem is full even after dropping the oldest frame).
        if len(frame) > self.max_frame:
            self.counts["oversize"] += 1
            return -1
        i = self.next
        if self.wc[i]:
            self._drop(i)
        self._make_room()
        name = self._name(boot, seq)
        while True:
            try:
                self._write(name, frame)
                break
            except OSError as e:
                self._remove(name)
                slot = self.oldest()[0]
                if e.args[0] != 28 or slot < 0:  # not ENOSPC (a flash fault), or nothing left to give
                    self.counts["flash"] += 1
                    return -1
                # the filesystem is full: older frames make room (littlefs frees a block only
                # once a whole metadata log of frames is gone)
                self.feed()
                self._drop(slot)
        self._wc += 1
        self.wc[i] = self._wc
        self.boot[i] = boot
        self.seq[i] = seq
        self.size[i] = len(frame) + 2
        self.bytes += len(frame) + 2
        self._room -= 1
        self.live += 1
        self.next = (i + 1) % self.slots
        self._last = (i, frame)
        return i

    def _make_room(self):
        # keep reserve_blocks free after the next frame took its block: drop the oldest
        # frames (counted) until that many and one more are free
        if self._room > 0:
            return
        for _ in range(self.slots):
            try:
                free = self._fs.statvfs(self.dir)[3]
            except (AttributeError, OSError):
                self._room = self.slots  # no statvfs here: the ring alone bounds the buffer
                return
            self._room = free - 2 * self.reserve_blocks  # read again when this many frames later
            if free > self.reserve_blocks:
                return
            slot = self.oldest()[0]
            if slot < 0:
                return  # nothing of ours to give: the rest of the filesystem is full
            self.feed()
            self._drop(slot)

    def _drop(self, i):
        # slot i's frame is lost: the ring or the flash was full (counted)
        self.counts["dropped"] += 1
        self._forget(i)

    def _forget(self, i):
        # remove slot i's frame (acknowledged, torn, or dropped) and free its slot
        self._remove(self._name(self.boot[i], self.seq[i]))
        self.bytes -= self.size[i]
        self.wc[i] = 0
        self.live -= 1
        if self._last is not None and self._last[0] == i:
            self._last = None

    def ack(self, boot, seq, cum=None):
        # Remove seq and, with cum, every seq <= cum of that boot. Returns frames removed.
        removed = 0
        for i in range(self.slots):
            if self.wc[i] and self.boot[i] == boot and (self.seq[i] == seq or (cum is not None and self.seq[i] <= cum)):
                self.feed()
                self._forget(i)
                removed += 1
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
        # the frame in slot i; None if its file turned out torn or corrupt (then dropped)
        last = self._last
        if last is not None and last[0] == i:
            return last[1]
        n = self._read(self._name(self.boot[i], self.seq[i]))
        if n < 0:
            self.counts["torn"] += 1
            self._forget(i)
            return None
        return bytes(self._mv[0:n])

    def close(self):
        self._last = None
