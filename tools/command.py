# `citynode command --node X --op interval --arg 60 --operator-keys FILE --mqtt URL`: the
# operator's command to one node, signed with the node's command key (SPEC.md 6.7) for the
# node's current boot (read from its retained P/nodes/X/state, or --boot) and a counter above
# every earlier one (the clock's Unix seconds, or the last counter + 1; kept in the operator
# keys file before anything is sent), in the compact form for LoRa (SPEC.md 13.6) when the
# node's state names a LoRa link or --compact asks. Published to P/nodes/X/down, or printed (--print) for
# another publisher; --wait shows the node's result when it reports it. Exit codes: 0 applied
# (or sent/printed without --wait), 1 refused by the node or no result in time or no broker,
# 2 wrong input (nothing signed), 130 Ctrl-C.
import argparse
import json
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from gateway.files import write_private
from gateway.keys import KeysError, parse_keys, read_toml, toml_key
from protocol import command
from protocol.message import check_node_id
from tools.cli import EXIT_FAILED, CliError, UsageError

DEFAULT_PREFIX = "citynode"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", required=True, help="the node to command")
    p.add_argument("--op", required=True, choices=command.OPS, help="what to do")
    p.add_argument("--arg", help="the argument as JSON: 60 (interval, time), '{\"alarm_m\": 1.5}' (thresholds)")
    p.add_argument("--operator-keys", required=True, metavar="FILE",
                   help="the operator keys file from `citynode provision` (command keys, mode 0600)")
    p.add_argument("--mqtt", metavar="URL", help="broker: mqtt://[user:password@]host:1883 or mqtts://...")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix P of P/nodes/<node>/down (%(default)s)")
    p.add_argument("--boot", type=int, help="the node's current boot (default: from its retained state on --mqtt)")
    p.add_argument("--compact", action="store_true",
                   help="sign the compact form for a LoRa downlink (SPEC.md 13.6; the default for a node whose "
                        "state says it is heard over LoRa)")
    p.add_argument("--print", action="store_true", help="print the signed command as JSON instead of publishing it")
    p.add_argument("--wait", action="store_true", help="wait for the node's result and show it")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the state or result (%(default)s)")


# ---------------------------------------------------------------- operator keys file


def load_operator_keys(path: str | os.PathLike) -> tuple[dict[str, bytes], dict[str, int]]:
    # -> (node -> command key, node -> last counter). KeysError with one line.
    data = read_toml(path, "operator keys file")
    keys = parse_keys(data, str(path))
    counters = {}
    for node, entry in data["nodes"].items():
        if "counter" not in entry or "key_version" in entry or "previous_key" in entry:
            # the gateway's keys file has the same [nodes.<id>] key = tables, but data keys: a
            # command signed with one is refused by the node (bad_signature) after it was sent
            raise KeysError(f"{path}: [nodes.{node}] has no command counter: this is a gateway keys file (the "
                            "nodes' data keys), not the operator keys file `citynode provision` wrote beside it "
                            "(operator-keys.toml)")
        c = entry["counter"]
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= command.U32:
            raise KeysError(f"{path}: [nodes.{node}] counter must be an integer 0..{command.U32}")
        counters[node] = c
    return keys, counters


def format_operator_keys(keys: dict[str, bytes], counters: dict[str, int]) -> str:
    lines = ["# citynode operator keys: the command key of each node and the last command counter used.",
             "# Keep this file secret (mode 0600) and off the gateway: it commands the nodes.", ""]
    for node in sorted(keys):
        lines += [f"[nodes.{toml_key(node)}]", f'key = "{keys[node].hex()}"', f"counter = {counters.get(node, 0)}", ""]
    return "\n".join(lines)


def next_counter(last: int, now_s: float | None = None) -> int:
    # above the last counter and at least the clock's Unix seconds: above any earlier command
    # even when this file's history was lost (SPEC 6.7)
    return max(last + 1, int(time.time() if now_s is None else now_s))


def down_payload(command_key: bytes, node: str, boot: int, counter: int, op: str, arg: Any = None,
                 compact: bool = False) -> str:
    # the JSON published on P/nodes/<node>/down (README, MQTT topics): the signed command in
    # "cose" (hex), the rest for people and logs (the gateway and the node read only "cose").
    # compact: the form for LoRa (SPEC.md 13.6, at most 45 bytes on the air; thresholds in whole
    # mm and mm/min), with "arg" as the node will read it
    if compact:
        token = command.sign_compact(command_key, node, boot, counter, op, arg)
        arg = command.peek(token)[1]["arg"]
    else:
        token = command.sign(command_key, node, boot, counter, op, arg)
    body = {"node": node, "op": op, "arg": arg, "boot": boot, "counter": counter, "cose": token.hex()}
    if compact:
        body["form"] = "compact"
    return json.dumps(body, separators=(",", ":"))


def on_lora(link: object) -> bool:
    # a node's link as its state names it (gateway/radio.py, gateway/chirpstack.py): heard over LoRa
    return isinstance(link, str) and (" lora " in f" {link} " or link.startswith("chirpstack "))


# ---------------------------------------------------------------- MQTT


class Broker:
    # one paho client on the node's state and up topics (its boot, and the results of its
    # commands as they arrive), and a publish that waits for its PUBACK
    def __init__(self, url: str, base: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise UsageError(f"--mqtt must look like mqtt://host:1883 or mqtts://host:8883, got {url!r}")
        self.boot = None
        self.link = None  # the node's link, as its state names it
        self.results = {}  # cmd_id -> {"cmd_id", "status", "result"} the node reported
        self.cond = threading.Condition()
        self.client = c = mqtt.Client(CallbackAPIVersion.VERSION2,
                                      client_id=f"citynode-command-{secrets.token_hex(3)}", protocol=mqtt.MQTTv311)
        if u.scheme == "mqtts":
            c.tls_set()
        if u.username:
            c.username_pw_set(urllib.parse.unquote(u.username), urllib.parse.unquote(u.password or ""))
        self.subscribed = threading.Event()
        self.topics = [(base + "/state", 1), (base + "/up", 1)]
        c.on_connect = self._connected
        c.on_subscribe = self._subscribed
        c.on_message = self._message
        try:
            c.connect(u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883), keepalive=30)
        except OSError as e:
            raise CliError(f"cannot reach the MQTT broker at {u.hostname}:{u.port} ({e.strerror or e})") from None
        c.loop_start()

    def _connected(self, client: Any, _u: object, _f: object, reason: Any, _p: object = None) -> None:
        if not reason.is_failure:
            client.subscribe(self.topics)

    def _subscribed(self, *_a: object) -> None:
        self.subscribed.set()

    def _message(self, _c: object, _u: object, msg: Any) -> None:
        try:
            st = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(st, dict):
            return
        with self.cond:
            if isinstance(st.get("boot"), int) and not isinstance(st["boot"], bool):
                self.boot = st["boot"]
            if isinstance(st.get("link"), str):
                self.link = st["link"]
            cmd = st.get("command")
            if isinstance(cmd, dict) and isinstance(cmd.get("cmd_id"), int):
                self.results[cmd["cmd_id"]] = cmd
            self.cond.notify_all()

    def wait(self, get: Callable[[], Any], timeout: float) -> Any:
        # -> the first value get() gives that is not None, or None after timeout seconds
        end = time.monotonic() + timeout
        with self.cond:
            while get() is None:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return get()

    def publish(self, topic: str, payload: str, timeout: float) -> None:
        if not self.subscribed.wait(timeout):
            raise CliError("the broker did not answer in time")
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise CliError(f"the broker did not acknowledge the command on {topic} in time")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------- the command


def parse_arg(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise UsageError(f"--arg {text!r} is not JSON (a number, or an object such as "
                         "'{\"alarm_m\": 1.5}')") from None


def run(args: argparse.Namespace) -> int:
    node = args.node
    if not check_node_id(node):
        raise UsageError(f"--node {node!r} is not a node id")
    arg = parse_arg(args.arg)
    code = command.check(args.op, arg)
    if code:
        raise UsageError(f"--op {args.op} --arg {args.arg}: {command.RESULTS[code]} (nothing was signed)")
    try:
        keys, counters = load_operator_keys(args.operator_keys)
    except KeysError:
        raise  # the operator keys file is wrong input (exit 2, tools/cli.py)
    if node not in keys:
        raise UsageError(f"{args.operator_keys} has no command key for {node}")
    if args.boot is not None and not 0 <= args.boot <= command.U32:
        raise UsageError(f"--boot {args.boot} is not 0..{command.U32}")
    if args.mqtt is None and (not args.print or args.boot is None or args.wait):
        raise UsageError("--mqtt is needed (or --print with --boot, to sign only)")
    base = f"{args.prefix}/nodes/{node}"
    broker = Broker(args.mqtt, base) if args.mqtt else None
    try:
        boot = args.boot
        if boot is None:  # its retained state, or its next frame
            assert broker is not None  # checked above: --mqtt unless --print --boot
            boot = broker.wait(lambda: broker.boot, args.timeout)
            if boot is None:
                raise CliError(f"no state or frame of {node} on {base}/state or /up within {args.timeout:g} s "
                               "(has the gateway heard it?); give --boot")
        counter = next_counter(counters.get(node, 0))
        if counter > command.U32:
            raise CliError(f"command counter of {node} is exhausted; provision a new command key")
        counters[node] = counter
        write_private(args.operator_keys, format_operator_keys(keys, counters))  # before it can be sent
        compact = args.compact or (broker is not None and on_lora(broker.link))
        payload = down_payload(keys[node], node, boot, counter, args.op, arg, compact)
        if args.print:
            print(payload)
            return 0
        assert broker is not None
        broker.publish(base + "/down", payload, args.timeout)
        form = " (compact, for LoRa)" if compact else ""
        print(f"{node}: {args.op} {args.arg or ''} signed{form} for boot {boot} as counter {counter}, sent to "
              f"{base}/down".replace("  ", " "), flush=True)
        if not args.wait:
            return 0
        got = broker.wait(lambda: broker.results.get(counter), args.timeout)
        if got is None:
            raise CliError(f"no result from {node} within {args.timeout:g} s (the gateway sends it when "
                           "the node is next heard)")
        print(f"{node}: {got.get('result') or got.get('status')}")
        return 0 if got.get("status") == command.APPLIED else EXIT_FAILED
    finally:
        if broker is not None:
            broker.close()

