# The keys file: one table per node, [nodes.<node-id>] key = "<hex>" (16..64 bytes), and after
# a re-key the key's version and the previous key (SPEC.md 4.5).
# Shared by the gateway (verification), provisioning and the technician tools.
import os
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

from gateway import InputError
from protocol import keyring
from protocol.message import KEY_MAX, KEY_MIN, check_node_id
from protocol.names import NODE_ID_RULE

MAX_KEY_VERSION = 0xFFFFFFFF  # SPEC.md 4.1: 1..4 bytes on the wire


class KeysError(InputError):
    pass


class Keys(dict):
    # node -> current key bytes (what ACKs and commands are MACed with), and per node whose key
    # was rotated its versions: versions[node] = {key version: key bytes} (SPEC.md 4.5)
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.versions = {}
        self.current = {}  # node -> current key version, for nodes not at 0
        self._choosers = {}

    def verifier(self, node: str) -> bytes | Callable[..., Any] | None:
        # what protocol.cose.verify takes for a node: its key, or after a re-key a function that
        # picks the version a frame's header names (protocol/keyring.py)
        pick = self._choosers.get(node)
        if pick is None:
            v = self.versions.get(node)
            if v is None:
                return self.get(node)
            pick = self._choosers[node] = keyring.chooser(v, node)
        return pick

    def version(self, node: str) -> int:
        # the current key version of a node (0: never rotated)
        return self.current.get(node, 0)

    def rotate(self, node: str, key: bytes, keep_previous: bool = True) -> None:
        # a new key for a node: its version one up; the key it replaces kept as the previous one
        # (its buffered frames still verify) unless keep_previous is False (then they are
        # refused as retired and the node discards them, SPEC.md 6.6); older versions are dropped
        old = self.get(node)
        self[node] = key
        if old is None:
            return
        version = self.version(node) + 1
        self.versions[node] = {version: key, version - 1: old} if keep_previous else {version: key}
        self.current[node] = version
        self._choosers.pop(node, None)


def _hex_key(source: str, node: str, entry: Mapping[str, Any], name: str) -> bytes:
    try:
        key = bytes.fromhex(entry[name])
    except (ValueError, TypeError):
        raise KeysError(f"{source}: [nodes.{node}] {name} is not hex") from None
    if not KEY_MIN <= len(key) <= KEY_MAX:
        raise KeysError(f"{source}: [nodes.{node}] {name} must be {KEY_MIN}..{KEY_MAX} bytes, got {len(key)}")
    return key


def _version(source: str, node: str, entry: Mapping[str, Any], name: str, default: int) -> int:
    v = entry.get(name, default)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_KEY_VERSION:
        raise KeysError(f"{source}: [nodes.{node}] {name} must be an integer 0..{MAX_KEY_VERSION}")
    return v


def parse_keys(data: Mapping[str, Any], source: str = "keys file") -> Keys:
    # [nodes.<id>] key = "<hex>", and after a re-key (SPEC.md 4.5): key_version = N, and
    # previous_key = "<hex>" with previous_version (N - 1 unless given) while the node's
    # backlog MACed with it drains
    nodes = data.get("nodes")
    if not isinstance(nodes, dict):
        raise KeysError(f"{source}: no [nodes.<id>] tables")
    keys = Keys()
    for node, entry in nodes.items():
        if not check_node_id(node):
            raise KeysError(f"{source}: node id {node!r}: must be {NODE_ID_RULE}")
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise KeysError(f"{source}: [nodes.{node}] needs key = \"<hex>\"")
        key = keys[node] = _hex_key(source, node, entry, "key")
        version = _version(source, node, entry, "key_version", 0)
        versions = {version: key}
        if "previous_key" in entry:
            prev = _version(source, node, entry, "previous_version", version - 1)
            if prev >= version:
                raise KeysError(f"{source}: [nodes.{node}] previous_version must be below key_version ({version})")
            versions[prev] = _hex_key(source, node, entry, "previous_key")
        if version or len(versions) > 1:
            keys.versions[node] = versions
            keys.current[node] = version
    return keys


def read_toml(path: str | os.PathLike[str], what: str = "keys file") -> dict[str, Any]:
    # a keys file's TOML (this one, or the operator keys file of tools/command.py); KeysError
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise KeysError(f"{path}: no such {what}") from None
    except tomllib.TOMLDecodeError as e:
        raise KeysError(f"{path}: not valid TOML ({e})") from None


def load_keys(path: str | os.PathLike[str]) -> Keys:
    return parse_keys(read_toml(path), str(path))


def toml_key(name: str) -> str:
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


def format_keys(keys: Mapping[str, bytes]) -> str:
    # Keys (or a dict node -> key bytes) -> keys file text
    versions = getattr(keys, "versions", {})
    current_of = getattr(keys, "version", lambda node: 0)
    lines = ["# citynode node keys: keep this file secret (mode 0600)", ""]
    for node in sorted(keys):
        lines.append(f"[nodes.{toml_key(node)}]")
        lines.append(f'key = "{keys[node].hex()}"')
        held = versions.get(node)
        if held:
            current = current_of(node)
            if current:
                lines.append(f"key_version = {current}")
            for kv in sorted(held):
                if kv != current:
                    lines.append(f'previous_key = "{held[kv].hex()}"  # until the backlog MACed with it drained')
                    lines.append(f"previous_version = {kv}")
        lines.append("")
    return "\n".join(lines)
