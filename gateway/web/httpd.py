# The status page's HTTP server: werkzeug's threaded WSGI server (the stdlib's http.server
# underneath), bounded so that clients that open connections and send nothing, or dribble
# a request byte by byte, cannot starve the page, /metrics or the gateway around it:
#
# - at most max_connections at once (each is a thread and a file descriptor; the gateway's
#   select() users need its descriptors below 1024). A new connection over the cap evicts
#   the connection that has waited longest for a request; when every one is busy answering,
#   the new one gets a 503 and is closed. A request that is sent promptly is always served.
# - a request head (request line and headers) must arrive within header_timeout_s of the
#   connection's start, and the next one on a kept-alive connection within idle_timeout_s of
#   the last answer; an answer must be taken within busy_timeout_s. A janitor thread ends
#   connections past their deadline (a slow byte-by-byte client included); every socket
#   read and write also times out after header_timeout_s.
# - a request head is at most max_head_bytes (431 beyond), its request line included (414).
#
# - a request head it cannot parse gets 400 (505 for an HTTP version it does not speak), with
#   a status line, and is counted (bad_request).
#
# Counts (accepted, evicted, refused, timed_out, head_too_large, bad_request, errors) go to
# self.counts, for /metrics.
from __future__ import annotations

import collections
import contextlib
import http.client
import io
import logging
import socket
import threading
import time
from typing import Any, cast

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

log = logging.getLogger("citynode.gateway.web")

WAITING, BUSY = "waiting", "busy"


class Counts:
    # named counters shared by the server's threads and the app
    def __init__(self) -> None:
        self._c = collections.Counter()
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._c[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._c)


class _HeadLimit:
    # The handler's rfile while a request head is read: readline() stops at `left` bytes
    # in all (http.client.LineTooLong beyond, which http.server answers with 431).
    def __init__(self, raw: Any, budget: int) -> None:
        self.raw = raw
        self.budget = budget
        self.left: int | None = None  # None: no limit (the body)

    def readline(self, limit: int | None = -1) -> bytes:
        if self.left is None:
            return self.raw.readline(limit)
        n = self.left + 1 if limit is None or limit < 0 else min(limit, self.left + 1)
        line = self.raw.readline(n)
        self.left -= len(line)
        if self.left < 0:
            raise http.client.LineTooLong("request head")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class _Handler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        server = self.bounded
        self.connection.settimeout(server.header_timeout_s)  # every recv and send on this connection
        self._head = _HeadLimit(self.rfile, server.max_head_bytes)
        self.rfile = cast("io.BufferedIOBase", self._head)  # what it does not bound goes to the real rfile
        self._requests = 0

    @property
    def bounded(self) -> BoundedWSGIServer:
        # the server this handler is made for (socketserver types it as any server)
        server = self.server
        assert isinstance(server, BoundedWSGIServer)
        return server

    def handle_one_request(self) -> None:
        # http.server's loop body, with the head bounded in size and time
        server = self.bounded
        if self._requests:
            server.mark(self.request, WAITING, server.idle_timeout_s)
        self._requests += 1
        self._head.left = server.max_head_bytes
        try:
            try:
                self.raw_requestline = self.rfile.readline()
            except http.client.LineTooLong:
                server.count("head_too_large")
                self.requestline, self.request_version, self.command = "", "HTTP/1.0", ""
                self.send_error(414)
                self._drain()
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            ok = self.parse_request()  # 431 (counted below) when the headers overrun the budget
            self._head.left = None
            if not ok:
                self._drain()
                return
            if not server.mark(self.request, BUSY, server.busy_timeout_s):
                self.close_connection = True  # cut while its head came in: what came is not a request
                return
            self.run_wsgi()
            self.wfile.flush()
        except (TimeoutError, OSError):
            self.close_connection = True

    def _drain(self) -> None:
        # after an error answer: read (a bounded amount of) what the client still sends, so that
        # closing does not reset the connection before the client has read the answer
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.settimeout(0.2)
            left = 4 * self.bounded.max_head_bytes
            while left > 0 and (chunk := self.connection.recv(min(left, 65536))):
                left -= len(chunk)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's answers to a request head it cannot parse (400, 505, 431; 414 above)
        if code == 431:
            self.bounded.count("head_too_large")
        elif code != 414:
            self.bounded.count("bad_request")
        if self.request_version == "HTTP/0.9":
            # what could not be parsed is answered with a status line: http.server took it for an
            # HTTP/0.9 request (which this server does not serve) and sent only an HTML body, which
            # an HTTP/1.x client (curl: "Received HTTP/0.9 when not allowed") cannot read
            self.request_version = "HTTP/1.0"
        super().send_error(code, message, explain)

    # No line per request in the journal (a url can carry ?token=), and none for the noise
    # of a scan or a flood: the counts are in /metrics.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        pass


class BoundedWSGIServer(ThreadedWSGIServer):
    def __init__(self, host: str, port: int, app: Any, *, max_connections: int = 64, header_timeout_s: float = 10.0,
                 idle_timeout_s: float = 30.0,
                 busy_timeout_s: float = 60.0, max_head_bytes: int = 16384, counts: Counts | None = None) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.busy_timeout_s = busy_timeout_s
        self.max_head_bytes = max_head_bytes
        self.counts = counts if counts is not None else Counts()
        self._conns = {}  # socket -> [state, since, deadline]
        self._lock = threading.Lock()
        # bound here, not by werkzeug (which prints and exits on a taken port): the caller gets the OSError
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(self.request_queue_size)
            super().__init__(host, port, app, handler=_Handler, fd=sock.fileno())  # it uses a dup of sock
        finally:
            sock.close()
        self._closed = threading.Event()  # made here: werkzeug's __init__ calls server_close() once
        self._janitor = threading.Thread(target=self._janitor_loop, name="status-web-janitor", daemon=True)
        self._janitor.start()

    def count(self, name: str, n: int = 1) -> None:
        self.counts.add(name, n)

    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def mark(self, sock: socket.socket, state: str, timeout_s: float) -> bool:
        # -> False when the connection was already ended (evicted or past its deadline)
        now = time.monotonic()
        with self._lock:
            if sock not in self._conns:
                return False
            self._conns[sock] = [state, now, now + timeout_s]
            return True

    def _end(self, sock: socket.socket) -> None:
        # under self._lock: wake the connection's thread (its recv returns b"") and forget it;
        # the thread closes the socket itself
        del self._conns[sock]
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def process_request(self, request: Any, client_address: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._conns) >= self.max_connections:
                waiting = [(since, s) for s, (state, since, _) in self._conns.items() if state == WAITING]
                if not waiting:
                    self.counts.add("refused")
                    refuse = True
                else:
                    self._end(min(waiting, key=lambda w: w[0])[1])
                    self.counts.add("evicted")
                    refuse = False
            else:
                refuse = False
            if not refuse:
                self._conns[request] = [WAITING, now, now + self.header_timeout_s]
                self.counts.add("accepted")
        if refuse:
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # an unexpected error on one connection: one line, no traceback on the journal
        self.count("errors")
        log.warning("status page: a request from %s failed", client_address[0] if client_address else "?",
                    exc_info=log.isEnabledFor(logging.DEBUG))

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._conns.pop(request, None)
        super().shutdown_request(request)

    def _janitor_loop(self) -> None:
        tick = min(1.0, self.header_timeout_s / 4)
        while not self._closed.wait(tick):
            now = time.monotonic()
            with self._lock:
                late = [s for s, (_, _, deadline) in self._conns.items() if deadline <= now]
                for s in late:
                    self._end(s)
                if late:
                    self.counts.add("timed_out", len(late))

    def server_close(self) -> None:
        if hasattr(self, "_closed"):
            self._closed.set()
        with self._lock:
            for s in list(self._conns):
                self._end(s)
        super().server_close()
