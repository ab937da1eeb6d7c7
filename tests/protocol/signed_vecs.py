# The signed command vectors (SPEC.md 6.7, protocol/vectors/signed.json), checked on CPython
# and MicroPython. Apart from vecs.py so a device heap loads it only for that file.
from protocol import command
from tests.protocol.vecs import FOLDER, load_file, unhex


def signed(folder=FOLDER):
    # the signed command vectors (SPEC.md 6.7)
    return load_file("signed.json", folder)


def check_signed(v):
    # -> None when the node's verdict on the vector's token is the vector's, else what differs
    st = v["state"]
    token = unhex(v["token"])
    key = unhex(v["command_key"])
    got = command.decide(token, st["node"], key, st["boot"], st["last"], None, st["depth_mm"], st["now_s"],
                         st["step_s"])
    if [got[0], got[1]] != [v["result"], v["fields"]] or command.RESULTS[got[0]] != v["result_name"]:
        return "verdict %r" % (got,)
    f = v["fields"]
    compact = v.get("profile") == "compact"  # SPEC.md 13.6
    if f is not None and v["result"] != command.MALFORMED and v.get("encoded", True):
        # made by the encoder: made again byte for byte
        sign = command.sign_compact if compact else command.sign
        again = sign(key, st["node"] if v["result"] != command.OTHER_NODE else "sew-08", f["boot"],
                     f["counter"], f["op"], f["arg"])
        if again != token and v["result"] != command.BAD_SIGNATURE:
            return "re-signed bytes differ"
    return None
