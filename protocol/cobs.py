# Serial framing (SPEC.md section 7): 0x00, COBS(message || CRC-16/CCITT-FALSE), 0x00.
# Console text may appear between frames; it never contains 0x00.
from protocol.cbor import FrameError
from protocol.cose import MAX_MESSAGE  # largest COSE message a link carries (bytes)

MAX_ENCODED = MAX_MESSAGE + 2 + (MAX_MESSAGE + 2) // 254 + 1  # COBS body without delimiters: 517

try:  # CPython: the same CRC in C
    from binascii import crc_hqx as _crc_hqx
except ImportError:  # MicroPython's binascii has no crc_hqx
    _crc_hqx = None


def crc16(data, crc=0xFFFF):
    # CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no xorout.
    if _crc_hqx is not None:
        return _crc_hqx(data, crc)
    return crc16_portable(data, crc)


def crc16_portable(data, crc=0xFFFF):
    # The bitwise CRC above, for MicroPython; equal to CPython's binascii.crc_hqx(data, crc).
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        crc &= 0xFFFF
    return crc


def cobs_encode(data):
    out = bytearray(b"\x00")  # placeholder for the first code byte
    code_at = 0
    code = 1
    for b in data:
        if b == 0:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = len(out)
                out.append(0)
                code = 1
    out[code_at] = code
    return bytes(out)


def cobs_decode(data):
    # -> bytes, or None if data is not valid COBS
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n:
            return None
        seg = data[i + 1 : end]
        if seg.find(b"\x00") >= 0:  # (`0 in bytearray` is not implemented on MicroPython)
            return None
        out.extend(seg)
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode(message):
    # A COSE message -> bytes to write on the serial link, delimiters included.
    if len(message) > MAX_MESSAGE:
        raise FrameError("oversize", "message of %d bytes exceeds %d" % (len(message), MAX_MESSAGE))
    crc = crc16(message)
    body = bytearray(message)
    body.append(crc >> 8)
    body.append(crc & 0xFF)
    return b"\x00" + cobs_encode(body) + b"\x00"


def _printable(chunk):
    for b in chunk:
        if b < 0x20 and b not in (9, 10, 13) or b == 0x7F:
            return False
    return True


class Deframer:
    # Splits a serial byte stream into events: ("frame", message), ("text", bytes)
    # and ("noise", reason). It resynchronises on the next 0x00 after anything bad,
    # and never holds more than MAX_ENCODED bytes.
    def __init__(self, crc_fn=None):
        self._buf = bytearray()
        self._overflow = False
        self._crc = crc_fn or crc16
        self.counts = {"frames": 0, "crc": 0, "cobs": 0, "oversize": 0, "short": 0}

    def feed(self, data):
        events = []
        buf = self._buf
        for b in data:
            if b == 0:
                self._chunk(events)
                buf = self._buf
            elif not self._overflow:
                buf.append(b)
                if len(buf) > MAX_ENCODED:
                    if _printable(buf):  # a long console line, not a frame
                        events.append(("text", bytes(buf)))
                    else:
                        self._overflow = True
                    self._buf = buf = bytearray()
        return events

    def pending_text(self):
        # Printable bytes waiting for a delimiter (console output); taken from the buffer.
        if self._buf and not self._overflow and _printable(self._buf):
            text = bytes(self._buf)
            self._buf = bytearray()
            return text
        return b""

    def _chunk(self, events):
        chunk = self._buf
        self._buf = bytearray()
        if self._overflow:
            self._overflow = False
            self.counts["oversize"] += 1
            events.append(("noise", "oversize"))
            return
        if not chunk:
            return
        body = cobs_decode(chunk)
        if body is not None and len(body) >= 3:
            if self._crc(body[:-2]) == (body[-2] << 8) | body[-1]:
                self.counts["frames"] += 1
                events.append(("frame", body[:-2]))
                return
            reason = "crc"
        else:
            reason = "cobs" if body is None else "short"
        if _printable(chunk):
            events.append(("text", bytes(chunk)))
            return
        self.counts[reason] += 1
        events.append(("noise", reason))
