# COSE_Mac0 (RFC 9052 section 6.2) with HMAC 256/64 (COSE alg 4), kid in the
# protected header so the node id is covered by the MAC. SPEC.md section 4.
import hashlib
import sys

from protocol.cbor import TAG_MAC0, FrameError, Tag, dumps, head, loads

ALG_HMAC_256_64 = 4
MAC_LEN = 8
MAX_MESSAGE = 512  # largest COSE message on any link, in bytes (SPEC.md section 2)

if sys.implementation.name == "micropython":  # no hmac module; the gateway's hot path stays off the heap
    from micropython import const

    _keyed_hmac = _compare_digest = _fast_envelope = None
else:
    from hmac import compare_digest as _compare_digest

    def const(x):  # CPython stand-in for micropython.const
        return x

    from protocol.fast import envelope as _fast_envelope
    from protocol.fast import hmac_sha256 as _keyed_hmac

_H_ALG = const(1)  # underscored const(): no global, no interned name on a device
_H_KID = const(4)
_H_KID_CONTEXT = const(10)  # RFC 8613 "kid context": here the node key's version (SPEC.md 4.1)


_PROTECTED = {}  # kid -> protected header bytes (sign)


def hmac_sha256(key, msg):
    # RFC 2104 on hashlib.sha256; keys longer than the 64-byte block are hashed first.
    # CPython keeps the keyed hash states per key (protocol/fast.py); MicroPython's hashlib
    # cannot copy a state, so the portable version hashes both pads every time.
    if _keyed_hmac is not None:
        return _keyed_hmac(key, msg)
    return hmac_sha256_portable(key, msg)


def hmac_sha256_portable(key, msg):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    ipad = bytearray(64)
    opad = bytearray(64)
    for i in range(len(key)):
        ipad[i] = key[i]
        opad[i] = key[i]
    for i in range(64):
        ipad[i] ^= 0x36
        opad[i] ^= 0x5C
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def protected_header(kid, key_version=0):
    # {1: 4, 4: kid}, and 10: the key version as a big-endian byte string once a key was rotated
    if not key_version:
        return dumps({_H_ALG: ALG_HMAC_256_64, _H_KID: kid})
    return dumps({_H_ALG: ALG_HMAC_256_64, _H_KID: kid, _H_KID_CONTEXT: key_version.to_bytes(4, "big").lstrip(b"\0")})



def _bstr_head(n):
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    return head(2, n)


def _mac_structure(protected, payload):
    # MAC_structure = ["MAC0", protected (bstr), external_aad = h'', payload (bstr)]
    return b"".join((b"\x84\x64MAC0", _bstr_head(len(protected)), protected, b"\x40",
                     _bstr_head(len(payload)), payload))


def mac0_tag(key, protected, payload):
    return hmac_sha256(key, _mac_structure(protected, payload))[:MAC_LEN]


def sign(key, kid, payload, key_version=0):
    # -> the bytes of a tagged COSE_Mac0 message; FrameError("oversize") past MAX_MESSAGE.
    # Written directly (the same bytes cbor.dumps gives): on MicroPython this halves the heap
    # a frame costs. The protected header is kept per kid: a node signs with one kid.
    # key_version: the version of `key` (SPEC.md 4.1), named in the header when not 0.
    cache = (kid, key_version) if key_version else kid
    protected = _PROTECTED.get(cache)
    if protected is None:
        if len(_PROTECTED) >= 16:
            _PROTECTED.clear()
        protected = _PROTECTED[cache] = protected_header(kid, key_version)
    return assemble(protected, payload, mac0_tag(key, protected, payload))


def assemble(protected, payload, tag):
    # The tagged COSE_Mac0 bytes of its parts (also how a compact LoRa message is rebuilt)
    msg = b"".join((b"\xd1\x84", _bstr_head(len(protected)), protected, b"\xa0", _bstr_head(len(payload)),
                    payload, b"\x48", tag))
    if len(msg) > MAX_MESSAGE:
        raise FrameError("oversize", "message of %d bytes exceeds %d" % (len(msg), MAX_MESSAGE))
    return msg


def _eq(a, b):
    # constant-time comparison of two byte strings of equal length
    if _compare_digest is not None:
        return _compare_digest(a, b)
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def _kid(protected):
    # The kid from a protected header {1: 4, 4: kid, ?10: key version}
    hdr = loads(protected)
    alg = hdr.get(_H_ALG) if isinstance(hdr, dict) else None
    if not isinstance(alg, int) or isinstance(alg, bool) or alg != ALG_HMAC_256_64:
        raise FrameError("alg", "protected header must say alg 4 (HMAC 256/64)")
    kid = hdr.get(_H_KID)
    if not isinstance(kid, bytes) or not kid:
        raise FrameError("kid", "protected header has no kid")
    kv = hdr.get(_H_KID_CONTEXT)  # the key version (SPEC.md 4.1; protocol/keyring.py reads it)
    if kv is not None and (not isinstance(kv, bytes) or not 0 < len(kv) <= 4 or kv[0] == 0):
        raise FrameError("kid", "bad key version")  # 1..4 bytes, big-endian, no leading zero
    return kid


def parse(msg):
    # Structure checks only: -> (kid, protected, payload, tag). No key needed. On CPython the
    # usual envelope is read in place (protocol/fast.py, strict, faster than cbor2; a test checks
    # it agrees with the general reader below); SPEC.md section 4.3.
    if not isinstance(msg, bytes):
        if not isinstance(msg, (bytearray, memoryview)):
            raise FrameError("type", "expected bytes")
        msg = bytes(msg)
    if len(msg) > MAX_MESSAGE:
        raise FrameError("oversize", "message of %d bytes exceeds %d" % (len(msg), MAX_MESSAGE))
    parts = _fast_envelope(msg) if _fast_envelope is not None else None
    if parts is not None:
        return parts
    protected, payload, tag = _decode_envelope(msg)
    return _kid(protected), protected, payload, tag


def _decode_envelope(msg):
    obj = loads(msg)
    if not isinstance(obj, Tag) or obj.tag != TAG_MAC0:
        raise FrameError("tag", "not a tagged COSE_Mac0 (tag 17)")
    arr = obj.value
    if not isinstance(arr, list) or len(arr) != 4:
        raise FrameError("cose", "COSE_Mac0 must be an array of 4")
    protected, unprotected, payload, tag = arr
    if not isinstance(protected, bytes) or not isinstance(payload, bytes):
        raise FrameError("cose", "protected header and payload must be byte strings")
    if not isinstance(tag, bytes) or len(tag) != MAC_LEN:
        raise FrameError("cose", "MAC tag must be %d bytes" % MAC_LEN)
    if not isinstance(unprotected, dict) or unprotected:
        raise FrameError("cose", "unprotected header must be an empty map in version 1")
    return protected, payload, tag


def verify(msg, key_for):
    # key_for(kid bytes) -> key bytes, or None, or for a node whose key was rotated a function
    # (protected header -> key bytes, raising FrameError) that picks the version the header names
    # (protocol/keyring.py, SPEC.md 4.5). Returns (kid, payload bytes).
    kid, protected, payload, tag = parse(msg)
    key = key_for(kid)
    if key is None:
        raise FrameError("unknown", "no key for kid %r" % (kid,))
    if callable(key):  # a receiver holding several versions of the node's key picks one by the
        key = key(protected)  # header (protocol/keyring.py, SPEC.md 4.5); never on a node
    if not _eq(mac0_tag(key, protected, payload), tag):
        raise FrameError("mac", "MAC does not verify")
    return kid, payload
