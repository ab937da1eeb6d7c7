# A gateway given by host name (firmware/dns.py, UdpLink): every lookup bounded in time, and
# looked up again with a backoff when the gateway stops answering (a DHCP change). A real DNS
# server on loopback (dnspython parses the node's queries and builds the answers) that answers,
# answers NXDOMAIN, or never answers; the link on CPython and on the real MicroPython VM.
import socket
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from firmware import dns as node_dns
from firmware.links import UdpLink
from firmware.sim.world import VirtualClock
from tests.support.dns import DnsServer

NAME = "gw.city.example"


@pytest.fixture
def dns_server():
    servers = []

    def make(**kw):
        s = DnsServer(**kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_query_and_answer_speak_dns_as_dnspython_does():
    q = dns.message.from_wire(node_dns.query(0x1234, NAME))
    assert q.id == 0x1234 and q.flags & dns.flags.RD and q.question[0].name.to_text() == NAME + "."
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(NAME + ".", 60, "IN", "CNAME", "other.example."))
    r.answer.append(dns.rrset.from_text("other.example.", 60, "IN", "A", "10.1.2.3"))
    wire = r.to_wire()  # names compressed
    assert node_dns.answer(0x1234, wire) == "10.1.2.3"
    assert node_dns.answer(0x1235, wire) is None  # another query's answer
    r.set_rcode(dns.rcode.NXDOMAIN)
    assert node_dns.answer(0x1234, r.to_wire()) is None


def test_a_dns_server_that_never_answers_costs_one_bounded_wait(dns_server):
    silent = dns_server(silent=True)
    t0 = time.monotonic()
    link = UdpLink(NAME, 5683, dns=silent.addr, clock=VirtualClock())
    took = time.monotonic() - t0
    assert link.addr is None and link.counts["dns"] == 1 and silent.queries == 1
    assert took < 2.5, took  # 1.5 s for the answer, far below the rp2 watchdog's 8.4 s
    t0 = time.monotonic()
    for _ in range(8):  # pump() sends up to 8 frames: none may wait for the DNS again
        assert link.send(b"frame") is False
    assert time.monotonic() - t0 < 0.5 and silent.queries == 1
    link.close()


def gateway_at(ip, port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    s.settimeout(3)
    return s


def test_the_gateway_moves_to_another_address_and_the_node_follows(dns_server):
    # a DHCP change on the gateway: its old address goes silent, the name points elsewhere
    old = gateway_at("127.0.0.1")
    port = old.getsockname()[1]
    new = gateway_at("127.0.0.2", port)
    server = dns_server(ip="127.0.0.1")
    clock = VirtualClock()
    link = UdpLink(NAME, port, dns=server.addr, clock=clock)
    try:
        assert link.send(b"one")
        data, node = old.recvfrom(100)
        old.sendto(b"ack", node)
        assert link.poll(1000) == [b"ack"]
        server.ip = "127.0.0.2"  # the lease changed; the old address answers no more
        for n in range(3):
            assert link.send(b"unanswered %d" % n)
            assert old.recvfrom(100)[0] == b"unanswered %d" % n
        assert server.queries == 1
        assert link.send(b"probe")  # looked up again only after the backoff
        assert old.recvfrom(100)[0] == b"probe"
        clock.sleep_ms(5000)
        assert link.send(b"moved")
        assert new.recvfrom(100)[0] == b"moved" and server.queries == 2 and link.counts["moved"] == 1
    finally:
        link.close()
        old.close()
        new.close()


@pytest.mark.micropython
def test_the_bounded_lookup_on_the_micropython_vm(dns_server):
    from tests.support import mpvm

    silent = dns_server(silent=True)
    good = dns_server(ip="127.0.0.1")
    script = (
        "import time\n"
        "from firmware.links import UdpLink\n"
        "t0 = time.ticks_ms()\n"
        "link = UdpLink(%r, 5683, dns=%r)\n"
        "print('SILENT', link.addr, link.counts['dns'], time.ticks_diff(time.ticks_ms(), t0))\n"
        "link = UdpLink(%r, 5683, dns=%r)\n"
        "print('GOOD', link.addr is not None, link.counts['dns'])\n"
    ) % (NAME, silent.addr, NAME, good.addr)
    out = mpvm.run(script).stdout
    silent_line = next(x for x in out.splitlines() if x.startswith("SILENT")).split()
    assert silent_line[1:3] == ["None", "1"] and int(silent_line[3]) < 2500, out
    assert "GOOD True 0" in out, out


class SlowLink:
    # every send blocks the board for 2 s (a lookup that waits for its answer, a full socket
    # buffer) and the gateway never answers
    def __init__(self, clock):
        self.clock = clock
        self.sent = 0

    def send(self, message):
        self.clock.sleep_ms(2000)
        self.sent += 1
        return True

    def poll(self, timeout_ms):
        self.clock.sleep_ms(timeout_ms)
        return []


def test_pump_feeds_the_watchdog_between_sends(tmp_path):
    # 8 frames in flight at 2 s each is 16 s: past an 8.4 s watchdog unless it is fed between them
    from firmware import config
    from firmware.node import Node
    from firmware.sim.board import SimBoard
    from tests.firmware.conftest import KEY, NODE

    cfg = config.validate({"node": NODE, "key": KEY.hex(), "watchdog_ms": 8000})
    board = SimBoard(str(tmp_path / "flash"))
    link = SlowLink(board.clock)
    node = Node(board, cfg, link)
    node.start()
    for _ in range(8):
        node.report()
    assert node.uplink.pump() == 8 and link.sent == 8
    node.health.feed()  # main: Reset("watchdog"), the hardware would have reset the board mid-pump
