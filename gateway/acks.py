# ACKs on the hot path: byte for byte what protocol.message.encode_ack builds (a test
# checks this), with the node's protected header cached and the small payload map
# written directly, so an ACK costs one HMAC and a few concatenations.
from protocol.cbor import head
from protocol.cose import mac0_tag, protected_header

_PROTECTED: dict[str, tuple[bytes, bytes]] = {}  # node -> (protected header bytes, its bstr head)


def encode_ack(key: bytes, node: str, boot: int, seq: int, cum: int | None = None) -> bytes:
    entry = _PROTECTED.get(node)
    if entry is None:
        prot = protected_header(node.encode())
        entry = _PROTECTED[node] = (prot, head(2, len(prot)) + prot)
    prot, prot_item = entry
    # {0: 2, 1: boot, 2: seq, ?10: cum}, keys ascending (SPEC.md 6.2)
    payload = (b"\xa4\x00\x02\x01" if cum is not None else b"\xa3\x00\x02\x01") + head(0, boot) + b"\x02" + head(0, seq)
    if cum is not None:
        payload += b"\x0a" + head(0, cum)
    return (b"\xd1\x84" + prot_item + b"\xa0" + head(2, len(payload)) + payload + b"\x48"
            + mac0_tag(key, prot, payload))
