# COSE_Mac0 (RFC 9052 section 6.2) with HMAC 256/64 (COSE alg 4), kid in the
# protected header so the node id is covered by the MAC. SPEC.md section 4.
import hashlib

from protocol.cbor import FrameError, Tag, dumps, head, loads

ALG_HMAC_256_64 = 4
TAG_MAC0 = 17
MAC_LEN = 8
_H_ALG = 1
_H_KID = 4

try:  # CPython: the C implementation, about 3x faster than the one below
    from hmac import digest as _hmac_digest
except ImportError:  # MicroPython has no hmac module
    _hmac_digest = None


def hmac_sha256(key, msg):
    # RFC 2104 on hashlib.sha256; keys longer than the 64-byte block are hashed first.
    if _hmac_digest is not None:
        return _hmac_digest(key, msg, "sha256")
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


def protected_header(kid):
    return dumps({_H_ALG: ALG_HMAC_256_64, _H_KID: kid})


def _mac_structure(protected, payload):
    # MAC_structure = ["MAC0", protected (bstr), external_aad = h'', payload (bstr)]
    out = bytearray(b"\x84\x64MAC0")
    out.extend(head(2, len(protected)))
    out.extend(protected)
    out.append(0x40)
    out.extend(head(2, len(payload)))
    out.extend(payload)
    return out


def mac0_tag(key, protected, payload):
    return hmac_sha256(key, _mac_structure(protected, payload))[:MAC_LEN]


def sign(key, kid, payload):
    # -> the bytes of a tagged COSE_Mac0 message
    protected = protected_header(kid)
    tag = mac0_tag(key, protected, payload)
    return dumps(Tag(TAG_MAC0, [protected, {}, payload, tag]))


def _eq(a, b):
    # constant-time comparison of two byte strings of equal length
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def parse(msg, loads_fn=None):
    # Structure checks only: -> (kid, protected, payload, tag). No key needed.
    # loads_fn lets the gateway use cbor2's C decoder; its errors become FrameError.
    if loads_fn is None:
        obj = loads(msg)
    else:
        try:
            obj = loads_fn(msg)
        except Exception as e:  # noqa: BLE001 - any decoder failure is a malformed frame
            raise FrameError("cbor", str(e)[:80])
    if getattr(obj, "tag", None) != TAG_MAC0:
        raise FrameError("tag", "not a tagged COSE_Mac0 (tag 17)")
    arr = obj.value
    if not isinstance(arr, (list, tuple)) or len(arr) != 4:
        raise FrameError("cose", "COSE_Mac0 must be an array of 4")
    protected, unprotected, payload, tag = arr
    if not isinstance(protected, bytes) or not isinstance(payload, bytes):
        raise FrameError("cose", "protected header and payload must be byte strings")
    if not isinstance(tag, bytes) or len(tag) != MAC_LEN:
        raise FrameError("cose", "MAC tag must be %d bytes" % MAC_LEN)
    if isinstance(unprotected, (bytes, str, list, tuple)) or not hasattr(unprotected, "keys") \
            or len(unprotected):
        raise FrameError("cose", "unprotected header must be an empty map in version 1")
    hdr = loads(protected)
    if not isinstance(hdr, dict) or hdr.get(_H_ALG) != ALG_HMAC_256_64:
        raise FrameError("alg", "protected header must say alg 4 (HMAC 256/64)")
    kid = hdr.get(_H_KID)
    if not isinstance(kid, bytes) or not kid:
        raise FrameError("kid", "protected header has no kid")
    return kid, protected, payload, tag


def verify(msg, key_for, loads_fn=None):
    # key_for(kid bytes) -> key bytes or None. Returns (kid, payload bytes).
    kid, protected, payload, tag = parse(msg, loads_fn)
    key = key_for(kid)
    if key is None:
        raise FrameError("unknown", "no key for kid %r" % (kid,))
    if not _eq(mac0_tag(key, protected, payload), tag):
        raise FrameError("mac", "MAC does not verify")
    return kid, payload
