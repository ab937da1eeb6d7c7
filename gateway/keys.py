# The keys file: one table per node, [nodes.<node-id>] key = "<hex>" (16..64 bytes).
# Shared by the gateway (verification), provisioning and the technician tools.
import tomllib

from protocol.message import check_node_id
from protocol.names import NODE_ID_RULE

MIN_KEY = 16
MAX_KEY = 64


class KeysError(ValueError):
    pass


def parse_keys(data, source="keys file"):
    nodes = data.get("nodes")
    if not isinstance(nodes, dict):
        raise KeysError(f"{source}: no [nodes.<id>] tables")
    keys = {}
    for node, entry in nodes.items():
        if not check_node_id(node):
            raise KeysError(f"{source}: node id {node!r}: must be {NODE_ID_RULE}")
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise KeysError(f"{source}: [nodes.{node}] needs key = \"<hex>\"")
        try:
            key = bytes.fromhex(entry["key"])
        except ValueError:
            raise KeysError(f"{source}: [nodes.{node}] key is not hex") from None
        if not MIN_KEY <= len(key) <= MAX_KEY:
            raise KeysError(f"{source}: [nodes.{node}] key must be {MIN_KEY}..{MAX_KEY} bytes, got {len(key)}")
        keys[node] = key
    return keys


def load_keys(path):
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise KeysError(f"{path}: no such keys file") from None
    except tomllib.TOMLDecodeError as e:
        raise KeysError(f"{path}: not valid TOML ({e})") from None
    return parse_keys(data, str(path))


def toml_key(name):
    # a TOML key (TOML 1.0 "Keys"): bare when it is only A-Za-z0-9_-, else a basic string with
    # backslash, quote and control characters escaped, so any id reads back as itself
    if name and all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
        return name
    out = []
    for c in name:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append("\\u%04X" % ord(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def format_keys(keys):
    # dict node -> key bytes -> keys file text
    lines = ["# citynode node keys: keep this file secret (mode 0600)", ""]
    for node in sorted(keys):
        lines.append(f"[nodes.{toml_key(node)}]")
        lines.append(f'key = "{keys[node].hex()}"')
        lines.append("")
    return "\n".join(lines)
