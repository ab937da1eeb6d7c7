# The status server under 400 half-open connections (silent, half a request line, half the
# headers) while frames flow node -> real `citynode gateway` process -> real mosquitto: every
# frame reaches the broker, the outbox drains, /metrics answers each poll within a bound, and
# the gateway's file descriptors stay bounded (the status server caps its connections and
# evicts idle ones), so its select() users (paho, the pipeline) never see one past 1024.
import http.client
import os
import socket
import threading
import time

import pytest

from tests.gateway.conftest import NODES, GatewayProcess, write_config
from tests.support.broker import free_port
from tests.support.udpnode import UdpNode, run_nodes

pytestmark = pytest.mark.integration

HALF_OPEN = 400
FRAMES = 120  # per node
METRICS_BOUND_S = 2.0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(port):
    # -> (seconds, status, {metric line name: value})
    t = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
    finally:
        c.close()
    values = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return time.monotonic() - t, r.status, values


def wait_listening(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def test_half_open_flood_leaves_mqtt_metrics_and_outbox_alone(tmp_path, mosquitto, subscriber):
    udp, web = free_port(socket.SOCK_DGRAM), free_port()
    path = write_config(tmp_path / "gw", mosquitto.url, udp=f"127.0.0.1:{udp}",
                        web=f'listen = "127.0.0.1:{web}"\nhosts = ["gw.city.example"]')
    gwp = GatewayProcess(path).start(wait_port=udp)
    held = []
    try:
        assert wait_listening(web)
        baseline = fds(gwp.proc.pid)
        for i in range(HALF_OPEN):
            s = socket.create_connection(("127.0.0.1", web), timeout=5)
            if i % 5 == 1:
                s.sendall(b"GET /metr")
            elif i % 5 == 2:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: ")
            held.append(s)
        nodes = [UdpNode(n, k, ("127.0.0.1", udp)) for n, k in NODES.items()]
        result = []
        flow = threading.Thread(target=lambda: result.extend(run_nodes(nodes, FRAMES, rate=60, deadline_s=60)))
        flow.start()
        polls, most_fds = [], 0
        while flow.is_alive():
            polls.append(scrape(web)[:2])
            most_fds = max(most_fds, fds(gwp.proc.pid))
            time.sleep(0.2)
        flow.join()
        assert result == [True] * len(NODES)  # every frame ACKed: committed to the outbox
        want = {(n, 1, s) for n in NODES for s in range(FRAMES)}
        assert subscriber.wait(lambda: want <= subscriber.keys_up(), 30), len(want - subscriber.keys_up())
        deadline = time.monotonic() + 15
        while scrape(web)[2].get("citynode_outbox_depth") != 0.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        took, status, values = scrape(web)
        assert values["citynode_outbox_depth"] == 0.0 and values["citynode_broker_connected"] == 1.0
        worst = max(t for t, _ in polls)
        evicted = values.get('citynode_web_events_total{name="evicted"}', 0)
        print(f"{len(polls)} /metrics polls during the flood, worst {worst:.3f} s; gateway fds {baseline} -> "
              f"at most {most_fds}; evicted {evicted:.0f}")
        assert {s for _, s in polls} == {200} and worst < METRICS_BOUND_S, polls
        assert most_fds <= baseline + 64 + 16, (baseline, most_fds)  # the cap, not the flood, bounds them
        assert evicted >= HALF_OPEN - 64
        assert values["citynode_web_connections"] <= 64
        for host, want in (("gw.city.example", 200), ("evil.example", 400)):  # [web] hosts reaches the server
            c = http.client.HTTPConnection("127.0.0.1", web, timeout=10)
            c.request("GET", "/api/status", headers={"Host": host})
            assert c.getresponse().status == want, host
            c.close()
    finally:
        for s in held:
            s.close()
        gwp.terminate()
