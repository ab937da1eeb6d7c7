# The status page's JSON API, metrics and access rules, over real HTTP on loopback.
import json
import time
import urllib.error
import urllib.request

import pytest

from gateway.web.history import History
from gateway.web.server import StatusWeb, WebConfigError, parse_listen

HOSTILE = '<img src=x onerror="alert(1)">'


def make_status(nodes):
    def status():
        return {
            "gateway": {"id": "gw-test", "version": "0.1.0", "uptime_s": 12.5, "broker_connected": True,
                        "outbox_depth": 3, "outbox_oldest_age_s": 1.5, "frames_per_s": 2.0,
                        "disk_free_bytes": 10**9, "rejected": {"mac": 2},
                        "counters": {"received": 14, "st_sent": 4, "st_rejected": 1}},
            "stale_after_s": 60,
            "nodes": nodes,
        }
    return status


@pytest.fixture
def web(history):
    now = time.time()
    nodes = [
        {"id": "sew-01", "last_seen": now - 5, "battery_v": 3.7, "link": "udp", "firmware": "0.1.0",
         "accepted": 10, "rejected": {"mac": 1}, "gaps": 2, "storm": True, "unverified": 4,
         "command": {"cmd_id": 7, "status": 10, "result": "replay"}, "commands": {"applied": 2, "replay": 1},
         "forecast": {"eta_s": 420, "warning": True, "why": "rising"}},
        {"id": HOSTILE, "last_seen": now - 500, "accepted": 1, "rejected": {}, "gaps": 0},
    ]
    w = StatusWeb(listen="127.0.0.1:0", status_fn=make_status(nodes), history=history).start()
    yield w
    w.stop()


def get(url, headers=None, method="GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_status_api(web):
    code, headers, body = get(web.url + "api/status")
    assert code == 200 and headers["Content-Type"] == "application/json"
    s = json.loads(body)
    assert s["gateway"]["id"] == "gw-test" and abs(s["now"] - time.time()) < 5
    assert [n["id"] for n in s["nodes"]] == ["sew-01", HOSTILE]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"


def test_history_api_returns_stored_points(web, history):
    now = time.time()
    for i in range(5):
        history.add("sew-01", now - 60 * (5 - i), {"l": 0.1 * i, "t": 20.0 + i, "note": "x"}, flags=1 if i > 2 else 0)
    code, _, body = get(web.url + "api/nodes/sew-01/history?hours=1")
    assert code == 200
    h = json.loads(body)
    assert len(h["t"]) == 5 and h["t"] == sorted(h["t"])
    assert h["series"]["l"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert "note" not in h["series"]
    assert h["storm"] == [0, 0, 0, 1, 1]


def test_history_of_unknown_node_is_404(web):
    assert get(web.url + "api/nodes/nobody/history")[0] == 404
    assert get(web.url + "api/nodes/sew-01/history?hours=abc")[0] == 400


def test_page_and_assets_are_served_locally(web):
    code, _, body = get(web.url)
    assert code == 200
    page = body.decode()
    assert "/static/app.js" in page and "http://" not in page and "https://" not in page
    for asset in ("static/app.js", "static/style.css", "static/vendor/uPlot.iife.min.js"):
        assert get(web.url + asset)[0] == 200, asset


def test_read_only(web):
    for method in ("POST", "PUT", "DELETE"):
        assert get(web.url + "api/status", method=method)[0] == 405


def test_metrics(web):
    code, headers, body = get(web.url + "metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert 'citynode_frames_accepted_total{node="sew-01"} 10.0' in text
    assert 'citynode_frames_rejected_total{node="sew-01",reason="mac"} 1.0' in text
    assert "citynode_outbox_depth 3.0" in text
    assert "citynode_broker_connected 1.0" in text
    assert 'citynode_node_overflow_eta_seconds{node="sew-01"} 420.0' in text
    assert 'citynode_node_overflow_warning{node="sew-01"} 1.0' in text
    assert 'citynode_gateway_events_total{name="st_rejected"} 1.0' in text
    assert 'citynode_node_unverified_frames_total{node="sew-01"} 4.0' in text
    assert 'citynode_node_command_results_total{node="sew-01",result="replay"} 1.0' in text


def test_loopback_by_default_and_token_elsewhere():
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    with pytest.raises(WebConfigError, match="not loopback; set web.token"):
        parse_listen("0.0.0.0:8080")
    assert parse_listen("0.0.0.0:8080", token="s3cret") == ("0.0.0.0", 8080)
    with pytest.raises(WebConfigError, match="HOST:PORT"):
        parse_listen("8080")


def test_token_is_required_when_set(history):
    w = StatusWeb(listen="127.0.0.1:0", status_fn=make_status([]), history=history, token="s3cret").start()
    try:
        assert get(w.url + "api/status")[0] == 401
        assert get(w.url + "api/status", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(w.url + "api/status", {"Authorization": "Bearer s3cret"})[0] == 200
        assert get(w.url + "api/status?token=s3cret")[0] == 200  # session cookie tests: test_server_limits.py
    finally:
        w.stop()


def test_history_is_bounded(tmp_path):
    h = History(tmp_path / "h.sqlite", max_rows=100, keep_s=3600)
    now = time.time()
    for i in range(50):
        h.add("n", now - i, {"t": 1.0, "l": 2.0, "h": 3.0})
    h.add("n", now - 7200, {"t": 1.0})  # older than keep_s
    h.flush()
    assert h.rows() == 100
    assert min(h.query("n", since_s=10**6)["t"]) > now - 3600
    h.close()
