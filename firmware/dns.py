# A DNS lookup bounded in time, for a gateway given by host name. lwIP's getaddrinfo on the
# Pico W waits for its answer with no timeout of its own (extmod/modlwip.c lwip_getaddrinfo:
# dns_gethostbyname, then `while (state.status == 0) poll_sockets();` until lwIP's DNS timer
# gives up, far longer than the rp2 watchdog's 8.4 s). This asks the network's DNS server
# (the one DHCP gave: WLAN.ifconfig()[3]) itself: one UDP query for the A record (RFC 1035
# 4.1), one socket poll of at most wait_ms, then the answer or None.
import struct

_TYPE_A = 1
_CLASS_IN = 1


def query(qid, host):
    # -> the query message: header (id, RD, one question), the name as labels, type A, class IN
    q = bytearray(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0))
    for label in host.split("."):
        b = label.encode()
        if not 0 < len(b) < 64:
            raise ValueError("bad host name")
        q.append(len(b))
        q.extend(b)
    q.extend(b"\x00\x00\x01\x00\x01")
    return bytes(q)


def _skip_name(data, i):
    # past a (possibly compressed) name at data[i]
    while True:
        n = data[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def answer(qid, data):
    # -> "a.b.c.d" of the first A record in a response to query qid; None when the response
    # is another's, an error (NXDOMAIN, SERVFAIL) or has no A record. Garbage raises
    # IndexError or struct.error (the caller counts it).
    rid, flags, qd, an = struct.unpack_from(">HHHH", data, 0)
    if rid != qid or not flags & 0x8000 or flags & 0x000F:
        return None
    i = 12
    for _ in range(qd):
        i = _skip_name(data, i) + 4
    for _ in range(an):
        i = _skip_name(data, i)
        rtype, rclass, _ttl, rdlen = struct.unpack_from(">HHIH", data, i)
        i += 10
        if rtype == _TYPE_A and rclass == _CLASS_IN and rdlen == 4:
            return "%d.%d.%d.%d" % (data[i], data[i + 1], data[i + 2], data[i + 3])
        i += rdlen
    return None


def lookup(host, server, wait_ms, qid):
    # -> IPv4 address string, or None: no answer, or none for this name. Takes at most
    # wait_ms, and wait_ms / 4 more for each of up to three stray datagrams (a late answer
    # to an earlier query). server: (ip, port). The socket's OSError is the caller's.
    import select
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(query(qid, host), socket.getaddrinfo(server[0], server[1])[0][-1])  # numeric: no lookup
        p = select.poll()
        p.register(s, select.POLLIN)
        wait = wait_ms
        for _ in range(4):
            if not p.poll(wait):
                return None
            try:
                ip = answer(qid, s.recv(512))
            except Exception:  # noqa: BLE001 - a garbled datagram (IndexError, struct.error) is no answer
                ip = None
            if ip is not None:
                return ip
            wait = wait_ms // 4
        return None
    finally:
        s.close()
