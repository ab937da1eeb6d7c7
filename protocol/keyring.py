# Key versions at a receiver that holds several keys of one node (SPEC.md 4.5), and the retired
# message that answers a frame MACed with a version no longer held (SPEC.md 6.6). Gateway side
# only: a node has one key and never imports this module (no device heap, no qstrs).
from protocol import cose
from protocol.cbor import FrameError, dumps, loads


def key_version(protected):
    # The key version a protected header (as cose.parse returns it) names: 0 without label 10.
    # cose.parse has checked label 10 already: 1..4 bytes, big-endian, no leading zero.
    if protected[0] == 0xA2:
        return 0  # {1: 4, 4: kid}: the usual header, not decoded again
    kv = loads(protected).get(10)
    return int.from_bytes(kv, "big") if kv else 0


def chooser(versions, kid):
    # versions {key version: key} of node kid -> what cose.verify takes from key_for: a function
    # of the protected header that gives the key for the version it names; FrameError
    # "retired" below the newest version held, "unknown" above it
    newest = max(versions)

    def pick(protected):
        kv = key_version(protected)
        key = versions.get(kv)
        if key is None:
            if kv < newest:
                raise FrameError("retired", "key version %d of %s is no longer held" % (kv, kid))
            raise FrameError("unknown", "no key version %d for %s" % (kv, kid))
        return key

    return pick


def frame_key_version(frame):
    # The key version a COSE message says it was MACed with (0 when its header names none)
    return key_version(cose.parse(frame)[1])


def encode_retired(key, node, boot, seq, key_version):
    # The gateway cannot verify data frame (boot, seq): the key version it was MACed with is no
    # longer held; key_version is the one the gateway holds now (SPEC.md 6.6). MACed like an ACK.
    # {0: type 5 (retired), 1: boot, 2: seq, 15: key_version} (SPEC.md 6.6, message.py's keys)
    return cose.sign(key, node.encode(), dumps({0: 5, 1: boot, 2: seq, 15: key_version}))
