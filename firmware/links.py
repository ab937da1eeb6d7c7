# Links to the gateway behind one small interface:
#   send(message) -> bool    one COSE message out (False: the link could not take it; None:
#                            not now, the frame stays due and the link is not down: LoRa's duty
#                            cycle, firmware/lora_link.py)
#   poll(timeout_ms) -> list messages that arrived (COSE bytes), waiting at most timeout_ms
#   pace (optional)   how a simulation drives it (firmware/uplink.py Pace); console (optional):
#                     the board's own console, listened to while the node sleeps
# UART frames messages with COBS + CRC (SPEC section 7) and passes console text by;
# UDP carries one message per datagram. Rejects are counted, never raised. (The sim
# board's SimLink is in firmware/sim/link.py.)
from firmware.clock import clock_or_new
from protocol import cobs

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:

    def const(x):  # CPython stand-in for micropython.const
        return x


class StdioUart:
    # This process's stdin/stdout as a UART (a sim board on a pty, or a board's USB console):
    # frames and console text share the line, as SPEC section 7 allows
    def __init__(self, rx=None, tx=None):
        import select
        import sys

        self.rx = rx or sys.stdin.buffer
        self.tx = tx or sys.stdout.buffer
        # stdout.buffer on RP2 and ESP32 is a FileIO without flush() (MicroPython 1.28
        # shared/runtime/sys_stdio_mphal.c, stdio_locals_dict_table); CPython's needs one
        self._flush = getattr(self.tx, "flush", None)
        self.console = rx is None  # the board's own console: Ctrl-C is ours to handle
        if self.console:
            try:  # 0x03 inside an ACK or command must not stop the node (MicroPython's Ctrl-C)
                import micropython

                micropython.kbd_intr(-1)
            except (ImportError, AttributeError):
                pass
        self._poll = select.poll()
        self._poll.register(self.rx, select.POLLIN)

    def any(self):
        return 1 if self._poll.poll(0) else 0

    def readinto(self, buf):
        if not self._poll.poll(0):
            return None
        b = self.rx.read(1)  # one byte per readiness: never blocks
        if not b:
            return None
        buf[0] = b[0]
        return 1

    def write(self, data):
        n = self.tx.write(data)
        if self._flush is not None:
            self._flush()
        return n


class UartLink:
    def __init__(self, uart, clock=None, pace=None):
        # uart: machine.UART-like (write, any, readinto); clock: waits out poll's timeout
        self.uart = uart
        self.clock = clock_or_new(clock)
        self.pace = pace  # how a simulation drives this link (firmware/uplink.py Pace); None: the field's
        self.deframer = cobs.Deframer()
        self._rx = bytearray(64)
        # A technician still gets in: mpremote and citynode flash send "\r\x03" (Ctrl-C after
        # CR), a person at a terminal presses Ctrl-C twice. A 0x03 counts when only CR/LF/0x03
        # came since the last delimiter and the byte right before it was CR, LF or 0x03; a lone
        # 0x03 (line noise, a glitch after a frame) is data and never drops the node to the
        # REPL. Inside a frame the second byte is always 0xd1 (COSE tag 17): no frame qualifies.
        # console: the board's own console (the node listens on it while it sleeps, Node.sleep)
        self.console = getattr(uart, "console", False)
        self._prefix_clear = True
        self._prev = 0
        self.counts = {"sent": 0, "received": 0, "text": 0, "noise": 0, "error": 0, "short": 0}
        self.last_error = None
        self.name = "uart"

    def _error(self, e):
        self.counts["error"] += 1
        self.last_error = e

    def send(self, message):
        try:
            wire = cobs.encode(message)
            n = self.uart.write(wire)
        except Exception as e:  # noqa: BLE001 - no link fault may stop the node loop
            self._error(e)
            return False
        # RP2's USB console writes 0 bytes with no host attached, fewer when the CDC buffer
        # stays full (ports/rp2/mphalport.c mp_hal_stdout_tx_strn); a UART write that timed
        # out returns None (py/stream.c). The gateway drops a cut frame by its CRC.
        if n is None or n < len(wire):
            self.counts["short"] += 1
            return False
        self.counts["sent"] += 1
        return True

    def _read(self, out):
        for _ in range(64):  # bounded: a flood of bytes cannot hold the loop
            try:
                if not self.uart.any():
                    break
                n = self.uart.readinto(self._rx)
            except Exception as e:  # noqa: BLE001 - e.g. a USB serial adapter that vanished: retried next poll
                self._error(e)
                break
            if not n:
                break
            if self.console:
                self._check_interrupt(n)
            for ev in self.deframer.feed(self._rx[:n]):
                if ev[0] == "frame":
                    out.append(ev[1])
                    self.counts["received"] += 1
                elif ev[0] == "text":
                    self.counts["text"] += 1
                else:
                    self.counts["noise"] += 1

    def _check_interrupt(self, n):
        rx = self._rx
        for i in range(n):
            b = rx[i]
            prev = self._prev
            self._prev = b
            if b == 0:
                self._prefix_clear = True
            elif b == 3:
                if self._prefix_clear and (prev == 13 or prev == 10 or prev == 3):
                    try:
                        import micropython

                        micropython.kbd_intr(3)
                    except (ImportError, AttributeError):
                        pass
                    raise KeyboardInterrupt
            elif b != 13 and b != 10:
                self._prefix_clear = False

    def poll(self, timeout_ms):
        out = []
        waited = 0
        while True:
            self._read(out)
            if out or waited >= timeout_ms:
                return out
            step = min(10, timeout_ms - waited)
            self.clock.sleep_ms(step)
            waited += step


_DNS_WAIT_MS = const(1500)  # one DNS query's answer, at most (the rp2 watchdog bites at 8.4 s)
_REQUERY_AFTER = const(3)  # sends in a row with no datagram back: look the gateway's name up again
_REQUERY_MS = const(5000)  # a lookup after a failed one (or a silent gateway) waits this long, doubling
_REQUERY_MAX_MS = const(300000)  # up to 5 min: one small datagram to the DNS server then


_SWITCH_AFTER = const(4)  # waits for an answer that came to nothing before the next gateway is tried
_PROBE_EVERY = const(8)  # away from the first gateway, every 8th frame goes to it as well


def udp_link(link, **kw):
    # a validated config's link (kind udp) -> UdpLink with its fallback gateways
    fb = [(g["host"], g["port"]) for g in link.get("fallback") or ()]
    return UdpLink(link["host"], link["port"], fallback=fb, **kw)


def _numeric(host):
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


class UdpLink:
    # fallback: [(host, port)] of gateways to try, in turn, when this one stops answering:
    # after _SWITCH_AFTER failed probes (a poll that waited after a send and got nothing) the
    # link moves to the next one; while away from the first, every _PROBE_EVERY-th frame goes
    # to the first as well, and its first answer brings the link back. The node's buffer keeps
    # each frame until some gateway ACKs it, and the gateways' stream keeps one copy
    # (docs/fleet.md): a switch loses nothing and doubles nothing.
    def __init__(self, host, port, sock=None, local_port=0, ready=None, dns=None, clock=None, fallback=(),
                 pace=None):
        # ready: callable -> bool, is the network up (a board's Wi-Fi keeper), asked before each send.
        # dns: (ip, port) of the DNS server, or a callable that says it (the server DHCP gave the
        # Wi-Fi), or None: the system's getaddrinfo (CPython, the unix port), bounded by the OS.
        # clock: times the lookups' backoff (ms()).
        import socket

        self.host = host
        self.port = port
        self.addr = None
        self.last_error = None
        self.counts = {"sent": 0, "received": 0, "oversize": 0, "error": 0, "dns": 0, "offline": 0, "moved": 0,
                       "switch": 0}
        self.ready = ready
        self.dns = dns
        self.clock = clock_or_new(clock)
        self.pace = pace  # as UartLink's
        # A gateway given by name is looked up at start, then again, with a backoff, while the
        # lookup fails or the gateway stops answering (its DHCP lease gave it another address)
        self.unanswered = 0
        self._qid = 0
        self._backoff_ms = _REQUERY_MS
        self._next_ms = 0
        self.gws = [(host, port)] + list(fallback)
        self.gw = 0  # index in gws of the gateway in use
        self.quiet = 0  # failed probes: polls that waited after a send and got nothing
        self.asked = False  # sent since the last datagram came back
        self.home = None  # the first gateway's address, while away from it
        self._resolve()  # with Wi-Fi down this fails: counted, and tried again with the backoff
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            local = "127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0"
            sock.bind(socket.getaddrinfo(local, local_port)[0][-1])
        self.sock = sock
        import select

        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self.name = "udp"

    def _error(self, e):
        self.counts["error"] += 1
        self.last_error = e

    def _resolve(self):
        # A numeric address is taken as it is. A name is asked of the DNS server within
        # _DNS_WAIT_MS (firmware/dns.py: lwIP's own getaddrinfo can block past the watchdog);
        # a failed lookup is counted and keeps the last address. Then the next one waits
        # _REQUERY_MS, doubling (reset by a datagram from the gateway).
        import socket

        host = self.host
        now = self.clock.ms()
        self._next_ms = now + self._backoff_ms
        self._backoff_ms = min(2 * self._backoff_ms, _REQUERY_MAX_MS)
        try:
            server = self.dns() if callable(self.dns) else self.dns
            if server is not None and not _numeric(host) and host != "localhost":
                from firmware import dns

                self._qid = (self._qid + 1) & 0xFFFF
                ip = dns.lookup(host, server, _DNS_WAIT_MS, self._qid)
                if ip is None:
                    raise OSError("no answer for " + host)
                host = ip
            addr = socket.getaddrinfo(host, self.port)[0][-1]
        except Exception as e:  # noqa: BLE001 - ports raise OSError with lwIP/esp-idf numbers; never fatal
            self.counts["dns"] += 1
            self.last_error = e
            return
        if self.addr is not None and addr != self.addr:
            self.counts["moved"] += 1
        self.addr = addr

    def send(self, message):
        if self.ready is not None:
            try:
                up = self.ready()
            except Exception as e:  # noqa: BLE001 - never fatal to the node loop
                self._error(e)
                up = False
            if not up:
                self.counts["offline"] += 1  # the frame waits in flash
                return False
        if self.quiet >= _SWITCH_AFTER and len(self.gws) > 1:
            self._use((self.gw + 1) % len(self.gws))
        self.asked = True
        if self.addr is None or self.unanswered >= _REQUERY_AFTER and not _numeric(self.host):
            if self.clock.ms() >= self._next_ms:
                self._resolve()
            if self.addr is None:
                return False
        try:
            self.sock.sendto(message, self.addr)
            if self.home is not None and self.counts["sent"] % _PROBE_EVERY == 0:
                self.sock.sendto(message, self.home)  # a probe: is the first gateway back?
        except Exception as e:  # noqa: BLE001 - no route, interface down, ECONNREFUSED, ...: never fatal
            self._error(e)
            return False
        self.counts["sent"] += 1
        self.unanswered += 1
        return True

    def _use(self, i):
        # switch to gateway i of gws (0: back to the first)
        if self.gw == 0:
            self.home = self.addr  # None when it never resolved: then no probes
        self.gw = i
        self.quiet = self.unanswered = 0
        self.counts["switch"] += 1
        if i == 0:
            self.home = None
        self.host, self.port = self.gws[i]
        self.addr = None
        self._backoff_ms = _REQUERY_MS
        self._resolve()

    def poll(self, timeout_ms):
        out = []
        wait = timeout_ms
        for _ in range(64):  # bounded: a flood of datagrams cannot hold the loop
            try:
                if not self._poller.poll(wait):
                    break
                wait = 0
                data, src = self.sock.recvfrom(cobs.MAX_MESSAGE + 1)
            except Exception as e:  # noqa: BLE001 - never fatal to the node loop
                self._error(e)
                break
            self.quiet = 0
            self.asked = False
            if self.home is not None and src == self.home:
                self._use(0)  # the first gateway answered a probe: back to it
            if len(data) > cobs.MAX_MESSAGE:
                self.counts["oversize"] += 1
                continue
            out.append(data)
            self.counts["received"] += 1
            self.unanswered = 0
            self._backoff_ms = _REQUERY_MS
        if not out and self.asked and timeout_ms > 0:
            self.quiet += 1
        return out

    def close(self):
        self.sock.close()

