# The status page server (gateway/web/) against input that is not a request it serves, over
# real sockets on loopback: every such request gets a clear answer and is counted in
# /metrics (citynode_web_events_total{name="bad_request"}); and a full disk under the chart
# history (its own SQLite file) neither breaks the page's charts nor logs a traceback.
import http.client
import socket
import time

import pytest

from gateway.web.history import History
from gateway.web.server import StatusWeb

NODE = "sew-01"


def status():
    return {"gateway": {"id": "gw-test", "outbox_depth": 0}, "nodes": [{"id": NODE}]}


@pytest.fixture
def history(tmp_path):
    h = History(tmp_path / "history.sqlite", flush_s=60)  # flushed by the test (and by each query)
    yield h
    h.close()


@pytest.fixture
def web(history):
    w = StatusWeb(listen="127.0.0.1:0", history=history, status_fn=status).start()
    yield w
    w.stop()


def get(w, path):
    c = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def raw(w, data):
    # bytes as they are -> the status line the server answered
    with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out.split(b"\r\n", 1)[0]


def events(w, name):
    _, body = get(w, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(f'citynode_web_events_total{{name="{name}"}} '):
            return float(line.split()[-1])
    return 0.0


def test_a_request_the_server_cannot_take_is_answered_and_counted(web):
    answers = [
        raw(web, b"\x16\x03\x01\x02\x00 TLS to a plain HTTP port\r\n\r\n"),  # a client speaking TLS
        raw(web, b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n"),  # an HTTP version it does not speak
        raw(web, b"GET /\x00 HTTP/1.1 x\r\nHost: localhost\r\n\r\n"),  # a malformed request line
        raw(web, b"POST /api/status HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"),  # read-only
        raw(web, b"GET /api/nodes/sew-01/history?hours=nan HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        raw(web, b"GET /api/nodes/sew-01/history?hours=x HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ]
    codes = [a.split(b" ")[1] for a in answers]
    assert codes == [b"400", b"505", b"400", b"405", b"400", b"400"], answers
    assert events(web, "bad_request") == 6
    assert get(web, "/api/nodes/sew-01/history?hours=2")[0] == 200  # a good one is not counted
    assert events(web, "bad_request") == 6


def test_a_full_disk_under_the_history_keeps_the_charts_and_logs_no_traceback(web, history, caplog):
    now = time.time()
    history.add(NODE, now - 60, {"l": 0.5})
    history.flush()
    db = history._db
    db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")  # the disk is full
    for i in range(2000):  # more than fits in the pages there are
        history.add(NODE, now - 59 + i / 100, {"l": 0.6, "b": 3.7})
    code, body = get(web, "/api/nodes/sew-01/history?hours=1")
    assert code == 200, body  # what is stored is still shown
    assert b'"t":[' in body and str(round(now - 60, 3))[:9].encode() in body
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert history.pending() == 4000 and history.dropped == 0  # kept for when there is room again
    for i in range(3500):  # the disk stays full: up to 10,000 readings wait, the rest are counted
        history.add(NODE, now - 30 + i / 1000, {"l": 0.7, "b": 3.6})
    assert history.pending() == 10_000 and history.dropped == 1000
    assert events(web, "history_dropped") == 1000
    db.execute("PRAGMA max_page_count=1000000")
    code, body = get(web, "/api/nodes/sew-01/history?hours=1")
    assert code == 200 and history.pending() == 0 and history.rows() == 10_001
