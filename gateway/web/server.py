# The status page server: Flask on a bounded werkzeug server (gateway/web/httpd.py: a
# connection cap, header and idle timeouts, a bounded request head), in a thread of the
# gateway. Read-only (GET only), loopback by default, a token for anything else. Every
# request must name this server in its Host header (loopback names, IP addresses, or
# [web] hosts): a web page elsewhere cannot reach it through DNS rebinding. With a token,
# a browser trades it once (`/?token=...`) for a session cookie (HttpOnly, SameSite=Strict,
# 12 h; Secure behind HTTPS); scripts send `Authorization: Bearer <token>`.
from __future__ import annotations

import collections
import ipaddress
import json
import math
import pathlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Self

from flask import Flask, Response, abort, redirect, request, send_from_directory
from flask.typing import ResponseReturnValue
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway import InputError
from gateway.web.httpd import BoundedWSGIServer, Counts
from gateway.web.metrics import StatusCollector

if TYPE_CHECKING:
    from gateway.web.history import History

STATIC = pathlib.Path(__file__).parent / "static"
SESSION_COOKIE = "citynode_session"
SESSION_S = 12 * 3600
MAX_SESSIONS = 256  # the oldest session ends when a new one would exceed this
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class WebConfigError(InputError):
    pass


def parse_listen(listen: str, token: str | None = None) -> tuple[str, int]:
    # "127.0.0.1:8080" / "[::1]:8080" / "0.0.0.0:8080" -> (host, port). Refuses a
    # non-loopback address without an access token: the page shows the city's sensor data.
    from gateway.config import split_hostport

    try:
        host, port = split_hostport(listen)
    except ValueError:
        raise WebConfigError(f"web.listen: {listen!r} is not HOST:PORT") from None
    if host == "localhost":
        host = "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise WebConfigError(f"web.listen: {host!r} is not an IP address") from None
    if not addr.is_loopback and not token:
        raise WebConfigError(
            f"web.listen: {listen} is not loopback; set web.token to an access token to serve it on the network"
        )
    return host, port


def host_name(header: str | None) -> str | None:
    # "Host: name:port" / "[::1]:8080" -> "name" (lower case, no trailing dot); None when malformed
    if not header or any(c in header for c in " /\\@?#"):
        return None
    if header.startswith("["):
        name, sep, rest = header[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, sep, port = header.partition(":")
        if sep and not port.isdigit():
            return None
    return name.lower().rstrip(".") or None


def host_allowed(name: str | None, hosts: Iterable[str] = ()) -> bool:
    # loopback names and IP literals are safe (DNS rebinding needs a DNS name); other names only
    # when configured ([web] hosts: the name a reverse proxy or the technicians use)
    if name is None:
        return False
    if name == "localhost" or name in hosts:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Sessions:
    # Session cookies for token mode: random ids, each valid SESSION_S; at most MAX_SESSIONS.
    def __init__(self) -> None:
        self._by_id = collections.OrderedDict()  # id -> expiry (time.time)
        self._lock = threading.Lock()

    def new(self) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            for old, expiry in list(self._by_id.items()):
                if expiry <= now:
                    del self._by_id[old]
            while len(self._by_id) >= MAX_SESSIONS:
                self._by_id.popitem(last=False)
            self._by_id[sid] = now + SESSION_S
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid:
            return False
        with self._lock:
            expiry = self._by_id.get(sid)
            if expiry is None:
                return False
            if expiry <= time.time():
                del self._by_id[sid]
                return False
            return True


class WebCollector:
    # the status server's own counts, as citynode_web_events_total{name} and the open connections
    def __init__(self, counts_fn: Callable[[], dict[str, int]], connections_fn: Callable[[], int]) -> None:
        self.counts_fn = counts_fn
        self.connections_fn = connections_fn

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily("citynode_web_events", "the status page server's counts by name (accepted, "
                                     "evicted, refused, timed_out, head_too_large, bad_request, bad_host, "
                                     "unauthorized, sessions, history_dropped)", labels=["name"])
        for name, n in sorted(self.counts_fn().items()):
            events.add_metric([name], n)
        conns = GaugeMetricFamily("citynode_web_connections", "open connections to the status page server")
        conns.add_metric([], self.connections_fn())
        yield from (events, conns)


def _web_counts(counts: Counts, history: History) -> dict[str, int]:
    # the server's counts, and the chart readings the history could not keep (a full disk for long)
    out = counts.snapshot()
    if history.dropped:
        out["history_dropped"] = history.dropped
    return out


def _secure(req: Any) -> bool:
    # served over TLS, or by a reverse proxy on this machine that says so
    if req.scheme == "https":
        return True
    peer = req.remote_addr or ""
    try:
        local = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        local = False
    return local and req.headers.get("X-Forwarded-Proto", "").lower() == "https"


def create_app(status_fn: Callable[[], dict[str, Any]], history: History, token: str | None = None,
               stale_after_s: float | None = None, hosts: Iterable[str] = (), counts: Counts | None = None,
               connections_fn: Callable[[], int] | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    registry = CollectorRegistry()
    registry.register(StatusCollector(status_fn))
    counts = counts if counts is not None else Counts()
    registry.register(WebCollector(lambda: _web_counts(counts, history), connections_fn or (lambda: 0)))
    hosts = frozenset(h.lower().rstrip(".") for h in hosts)
    sessions = Sessions()

    def plain(text: str, status: int) -> Response:
        return Response(text + "\n", status, {"Content-Type": "text/plain"})

    @app.before_request
    def check_access() -> ResponseReturnValue | None:
        if not host_allowed(host_name(request.headers.get("Host")), hosts):
            counts.add("bad_host")
            return plain("this server does not answer to that Host name; add it to [web] hosts", 400)
        if request.method not in ("GET", "HEAD"):
            counts.add("bad_request")
            abort(405)
        if not token:
            return None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and secrets.compare_digest(auth[7:].encode(), token.encode()):
            return None
        if sessions.valid(request.cookies.get(SESSION_COOKIE)):
            return None
        given = request.args.get("token")
        if given is not None and secrets.compare_digest(given.encode(), token.encode()):
            counts.add("sessions")
            request.environ["citynode.session"] = sessions.new()  # the cookie goes on the answer
            if request.path == "/":  # the page: take the token out of the address bar at once
                return redirect("/", 303)
            return None
        counts.add("unauthorized")
        return plain("access token required: open /?token=<token> once, or send Authorization: Bearer <token>", 401)

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if request.path.startswith("/api/") or request.path == "/metrics":
            resp.headers["Cache-Control"] = "no-store"
        sid = request.environ.get("citynode.session")
        if sid:
            resp.set_cookie(SESSION_COOKIE, sid, max_age=SESSION_S, path="/", httponly=True, samesite="Strict",
                            secure=_secure(request))
        return resp

    def as_json(obj: object, status: int = 200) -> Response:
        return Response(json.dumps(obj, separators=(",", ":")), status, {"Content-Type": "application/json"})

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str) -> Response:
        return send_from_directory(STATIC, name, max_age=3600)

    @app.get("/api/status")
    def api_status() -> Response:
        status = status_fn()
        status["now"] = time.time()
        if stale_after_s is not None:
            status.setdefault("stale_after_s", stale_after_s)
        return as_json(status)

    @app.get("/api/nodes/<node>/history")
    def api_history(node: str) -> Response:
        try:
            hours = float(request.args.get("hours", "24"))
        except ValueError:
            hours = math.nan
        if not math.isfinite(hours):  # nan passed float() and every comparison: an empty answer
            counts.add("bad_request")
            return as_json({"error": "hours must be a number"}, 400)
        hours = min(max(hours, 0.01), 24.0)
        known = {n.get("id") for n in status_fn().get("nodes", [])}
        if node not in known:
            return as_json({"error": "unknown node"}, 404)
        return as_json(history.query(node, since_s=hours * 3600))

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST})

    return app


class StatusWeb:
    # start() serves in a daemon thread; stop() shuts the server down.
    def __init__(self, *, listen: str, status_fn: Callable[[], dict[str, Any]], history: History,
                 token: str | None = None, stale_after_s: float | None = None, hosts: Iterable[str] = (),
                 **limits: Any) -> None:
        self.host, self.port = parse_listen(listen, token)
        self.limits = limits  # BoundedWSGIServer's: max_connections, header_timeout_s, ...
        self.counts = Counts()  # the server's and the app's, for /metrics
        self.app = create_app(status_fn, history, token=token, stale_after_s=stale_after_s, hosts=hosts,
                              counts=self.counts, connections_fn=self.connections)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def connections(self) -> int:
        server = self._server
        return server.connections() if server else 0

    def start(self) -> Self:
        self._server = BoundedWSGIServer(self.host, self.port, self.app, counts=self.counts, **self.limits)
        self.port = self._server.port  # port 0 picks a free one
        self._thread = threading.Thread(target=self._server.serve_forever, name="status-web", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
