# A DNS server on loopback for the host-name gateway tests and the sim year: dnspython parses
# the node's queries and builds the answers (a CNAME, then the A record), or NXDOMAIN, or
# (silent=True) it reads and never answers.
import socket
import threading

import dns.message
import dns.rcode
import dns.rrset


class DnsServer:
    # answers A queries for `name` with self.ip (None: NXDOMAIN); silent=True: reads and never answers
    def __init__(self, ip="127.0.0.1", silent=False, name="gw.city.example"):
        self.name = name
        self.ip = ip
        self.silent = silent
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.addr = self.sock.getsockname()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(512)
            except (TimeoutError, OSError):
                continue
            self.queries += 1
            if self.silent:
                continue
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            if self.ip is None or q.question[0].name.to_text() != self.name + ".":
                r.set_rcode(dns.rcode.NXDOMAIN)
            else:
                # a CNAME first, then the A record: the node must skip what it does not want
                r.answer.append(dns.rrset.from_text(self.name + ".", 60, "IN", "CNAME", "gw-host.city.example."))
                r.answer.append(dns.rrset.from_text("gw-host.city.example.", 60, "IN", "A", self.ip))
            self.sock.sendto(r.to_wire(), peer)

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()
