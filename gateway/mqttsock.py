# paho 2.x makes four system calls per QoS 1 message: a send() for each PUBLISH, and
# three recv() calls for each PUBACK (packet type, length, body). Measured in the gateway
# at saturation that was ~45 us of ~130 us per frame. BufferedSocket sits between paho and
# its socket: it reads up to 64 KiB at a time and serves paho's small reads from memory,
# and it collects paho's writes until flush(), which the publisher's loop calls before it
# sleeps in select(). paho keeps all the protocol work (packets, message ids, keepalive,
# reconnect state); only the system calls are batched. Client installs it through paho's
# socket factory; tests/gateway/test_mqttsock.py checks that it is in use.
import socket
import ssl

import paho.mqtt.client as mqtt

READ_SIZE = 65536
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class BufferedSocket:
    def __init__(self, sock):
        self.sock = sock
        self._in = b""
        self._pos = 0
        self._out = bytearray()

    # ------------------------------------------------------------ what paho calls

    def recv(self, n):
        buf, pos = self._in, self._pos
        if pos >= len(buf):
            buf = self.sock.recv(READ_SIZE)  # BlockingIOError / SSLWantReadError reach paho as before
            if not buf:
                return buf  # the broker closed the connection
            self._in, pos = buf, 0
        self._pos = pos + n
        return buf[pos:pos + n]

    def send(self, data):
        self._out += data
        return len(data)

    def pending(self):
        # bytes readable without the socket: ours, and those an ssl socket has decrypted
        n = len(self._in) - self._pos
        if n > 0:
            return n
        inner = getattr(self.sock, "pending", None)
        return inner() if inner is not None else 0

    def close(self):
        try:
            self.flush()  # a DISCONNECT paho just wrote; best effort, never blocks
        except OSError:
            pass
        self.sock.close()

    def setblocking(self, flag):
        self.sock.setblocking(flag)

    def fileno(self):
        return self.sock.fileno()

    def __getattr__(self, name):  # anything else paho may ask a socket (getpeername, ...)
        return getattr(self.sock, name)

    # ------------------------------------------------------------ what the publisher calls

    def want_write(self):
        return bool(self._out)

    def flush(self):
        # Write what paho queued. -> True when all of it went; False when the kernel's
        # buffer is full (select for writing, then flush again). OSError: connection lost.
        out = self._out
        while out:
            try:
                n = self.sock.send(out)
            except _WOULD_BLOCK:
                return False
            except ValueError:  # closed meanwhile
                out.clear()
                raise OSError("socket closed") from None
            del out[:n]
        return True


class Client(mqtt.Client):
    # paho's client with its socket wrapped in a BufferedSocket (see above)
    def _create_socket(self):
        sock = super()._create_socket()
        if isinstance(sock, socket.socket):  # plain TCP and ssl.SSLSocket (a subclass)
            return BufferedSocket(sock)
        return sock
