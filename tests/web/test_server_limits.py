# The status server's own defences, over real sockets on loopback: the Host header (DNS
# rebinding), the session cookie that replaces the raw token, the bounded request head, the
# header timeout against a byte-by-byte client, and the connection cap (eviction of idle
# connections, 503 when every connection is busy).
import http.client
import socket
import threading
import time

import pytest

from gateway.web.server import SESSION_COOKIE, StatusWeb, host_name

TOKEN = "s3cret-token-123"


def status():
    return {"gateway": {"id": "gw-test", "outbox_depth": 0}, "nodes": []}


@pytest.fixture
def serve(history):
    started = []

    def make(**kw):
        kw.setdefault("status_fn", status)
        w = StatusWeb(listen="127.0.0.1:0", history=history, **kw).start()
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


def request(w, path, headers=None, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def raw(w, data, timeout=5.0):
    # send bytes as they are (no Host header added), -> everything the server answered until it closed
    with socket.create_connection(("127.0.0.1", w.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def metric(w, name):
    _, _, body = request(w, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_host_header_must_name_this_server(serve):
    w = serve(hosts=["gw.city.example"])
    for host in ("127.0.0.1", f"127.0.0.1:{w.port}", "localhost:8080", "[::1]:8080", "192.168.1.20",
                 "gw.city.example", "GW.City.Example.:443"):
        assert request(w, "/api/status", {"Host": host})[0] == 200, host
    for host in ("evil.example", "evil.example:8080", "localhost.evil.example", "gw.city.example.evil",
                 "127.0.0.1.nip.io", "a b", "user@127.0.0.1"):
        code, _, body = request(w, "/api/status", {"Host": host})
        assert code == 400 and b"[web] hosts" in body, host
    assert raw(w, b"GET /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 400")  # no Host at all
    assert metric(w, 'citynode_web_events_total{name="bad_host"}') == 8


def test_host_name_parsing():
    assert host_name("Example.COM.:80") == "example.com" and host_name("[::1]") == "::1"
    assert host_name("[::1]:x") is None and host_name("a:b") is None and host_name("") is None


def cookie_of(headers):
    return headers["Set-Cookie"].split(";")[0].split("=", 1)[1]


def test_token_is_traded_once_for_a_session_cookie(serve):
    w = serve(token=TOKEN)
    code, headers, _ = request(w, f"/?token={TOKEN}")
    assert code == 303 and headers["Location"] == "/"  # the token leaves the address bar
    flags = [f.strip().lower() for f in headers["Set-Cookie"].split(";")]
    sid = cookie_of(headers)
    assert flags[0] == f"{SESSION_COOKIE}={sid}".lower() and TOKEN not in headers["Set-Cookie"] and len(sid) >= 40
    assert {"httponly", "samesite=strict", "max-age=43200", "path=/"} <= set(flags) and "secure" not in flags
    assert request(w, "/", {"Cookie": f"{SESSION_COOKIE}={sid}"})[0] == 200
    assert request(w, "/api/status", {"Cookie": f"{SESSION_COOKIE}={sid}"})[0] == 200
    assert request(w, "/api/status", {"Cookie": f"{SESSION_COOKIE}={TOKEN}"})[0] == 401  # the raw token is no cookie
    assert request(w, "/api/status", {"Cookie": f"citynode_token={TOKEN}"})[0] == 401  # nor is the old cookie
    assert request(w, "/api/status", {"Cookie": f"{SESSION_COOKIE}=forged"})[0] == 401
    assert request(w, "/?token=wrong")[0] == 401
    assert request(w, "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200  # scripts: no cookie needed
    code, headers, _ = request(w, f"/metrics?token={TOKEN}")  # an API path answers at once, with a cookie
    assert code == 200 and cookie_of(headers) != sid


def test_secure_cookie_behind_an_https_proxy(serve):
    w = serve(token=TOKEN)
    _, headers, _ = request(w, f"/?token={TOKEN}", {"X-Forwarded-Proto": "https"})
    assert "secure" in [f.strip().lower() for f in headers["Set-Cookie"].split(";")]


def test_request_head_is_bounded(serve):
    w = serve()
    assert raw(w, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n").startswith(b"HTTP/1.1 414")
    big = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"b" * 1000) for i in range(20))
    assert raw(w, b"GET / HTTP/1.1\r\nHost: localhost\r\n" + big + b"\r\n").startswith(b"HTTP/1.1 431")
    assert metric(w, 'citynode_web_events_total{name="head_too_large"}') == 2


def test_a_byte_by_byte_client_is_cut_at_the_header_timeout(serve):
    w = serve(header_timeout_s=1.0)
    with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
        start = time.monotonic()
        closed = None
        for ch in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"z" * 100:  # a byte every 0.1 s
            try:
                s.send(bytes([ch]))
            except OSError:
                closed = time.monotonic() - start
                break
            s.settimeout(0.1)
            try:
                if s.recv(1) == b"":
                    closed = time.monotonic() - start
                    break
            except TimeoutError:
                pass
    assert closed is not None and 0.9 <= closed <= 2.5, closed
    assert metric(w, 'citynode_web_events_total{name="timed_out"}') >= 1


def test_idle_connections_beyond_the_cap_are_evicted(serve):
    w = serve(max_connections=8)
    idle = [socket.create_connection(("127.0.0.1", w.port), timeout=5) for _ in range(40)]
    try:
        idle[3].sendall(b"GET /metrics HTTP/1.1\r\nHost: local")  # half a request
        t = time.monotonic()
        assert request(w, "/api/status")[0] == 200
        assert time.monotonic() - t < 2.0
        assert w.connections() <= 8
        assert metric(w, 'citynode_web_events_total{name="evicted"}') >= 40 - 8
    finally:
        for s in idle:
            s.close()


def test_busy_connections_are_not_evicted_a_new_one_gets_503(serve):
    release = threading.Event()
    entered = threading.Semaphore(0)

    def slow_status():
        entered.release()
        release.wait(10)
        return status()

    w = serve(max_connections=3, status_fn=slow_status)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(request(w, "/api/status")[0])) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            assert entered.acquire(timeout=10)
        assert raw(w, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").startswith(b"HTTP/1.1 503")
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert answers == [200, 200, 200]
