# The status page server: Flask on werkzeug's threaded WSGI server, in a thread of the
# gateway. Read-only (GET only), loopback by default, a token for anything else.
import ipaddress
import json
import logging
import pathlib
import secrets
import threading
import time

from flask import Flask, Response, abort, request, send_from_directory
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from werkzeug.serving import make_server

from gateway.web.metrics import StatusCollector

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request in the journal
STATIC = pathlib.Path(__file__).parent / "static"
TOKEN_COOKIE = "citynode_token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class WebConfigError(ValueError):
    pass


def parse_listen(listen, token=None):
    # "127.0.0.1:8080" / "[::1]:8080" / "0.0.0.0:8080" -> (host, port). Refuses a
    # non-loopback address without an access token: the page shows the city's sensor data.
    host, sep, port_s = str(listen).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise WebConfigError(f"web.listen: {listen!r} is not HOST:PORT")
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
    return host, int(port_s)


def create_app(status_fn, history, token=None, stale_after_s=None):
    app = Flask(__name__, static_folder=None)
    registry = CollectorRegistry()
    registry.register(StatusCollector(status_fn))

    @app.before_request
    def check_access():
        if request.method not in ("GET", "HEAD"):
            abort(405)
        if not token:
            return None
        given = request.args.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        if not secrets.compare_digest(given.encode(), token.encode()):
            return Response("access token required\n", 401, {"Content-Type": "text/plain"})
        return None

    @app.after_request
    def headers(resp):
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if request.path.startswith("/api/") or request.path == "/metrics":
            resp.headers["Cache-Control"] = "no-store"
        if token and request.args.get("token"):
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return resp

    def as_json(obj, status=200):
        return Response(json.dumps(obj, separators=(",", ":")), status, {"Content-Type": "application/json"})

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name):
        return send_from_directory(STATIC, name, max_age=3600)

    @app.get("/api/status")
    def api_status():
        status = status_fn()
        status["now"] = time.time()
        if stale_after_s is not None:
            status.setdefault("stale_after_s", stale_after_s)
        return as_json(status)

    @app.get("/api/nodes/<node>/history")
    def api_history(node):
        try:
            hours = float(request.args.get("hours", "24"))
        except ValueError:
            return as_json({"error": "hours must be a number"}, 400)
        hours = min(max(hours, 0.01), 24.0)
        known = {n.get("id") for n in status_fn().get("nodes", [])}
        if node not in known:
            return as_json({"error": "unknown node"}, 404)
        return as_json(history.query(node, since_s=hours * 3600))

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST})

    return app


class StatusWeb:
    # start() serves in a daemon thread; stop() shuts the server down.
    def __init__(self, *, listen, status_fn, history, token=None, stale_after_s=None):
        self.host, self.port = parse_listen(listen, token)
        self.app = create_app(status_fn, history, token=token, stale_after_s=stale_after_s)
        self._server = None
        self._thread = None

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self):
        self._server = make_server(self.host, self.port, self.app, threaded=True)
        self.port = self._server.server_port  # port 0 picks a free one
        self._thread = threading.Thread(target=self._server.serve_forever, name="status-web", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
