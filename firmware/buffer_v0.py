# Firmware 0.1.0 kept the offline buffer in one file of fixed-size slots rewritten in place
# (slot = magic c7 01, wc, boot, seq, len as >IIIH, CRC-16 over wc..len and the frame, the
# frame). Loaded only when that file is still on flash: its unacknowledged frames move to
# the new buffer oldest first, then the file goes.
import struct

from protocol.cobs import crc16


def migrate(buf, slot_bytes=256):
    found = []  # (wc, offset) of live slots
    raw = bytearray(slot_bytes)
    mv = memoryview(raw)
    try:
        f = buf._open(buf.path, "rb")
    except OSError:
        return 0
    try:
        off = 0
        while True:
            f.seek(off)
            n = f.readinto(raw)
            if not n or n < 18:
                break
            if raw[0] == 0xC7 and raw[1] == 0x01:
                wc, boot, seq, length = struct.unpack_from(">IIIH", raw, 2)
                if 18 + length <= n and crc16(mv[18 : 18 + length], crc16(mv[2:16])) == (raw[16] << 8) | raw[17]:
                    found.append((wc, off))
            off += slot_bytes
        found.sort()
        moved = 0
        for wc, off in found:
            f.seek(off)
            f.readinto(raw)
            wc, boot, seq, length = struct.unpack_from(">IIIH", raw, 2)
            try:
                buf._fs.stat(buf._name(boot, seq))
                continue  # moved before a power cut interrupted the migration
            except OSError:
                pass
            if buf.put(boot, seq, bytes(mv[18 : 18 + length])) >= 0:
                moved += 1
    finally:
        f.close()
    buf._fs.remove(buf.path)
    return moved
