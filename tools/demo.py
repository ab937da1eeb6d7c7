# `citynode demo [--nodes N] [--duration S] [--mqtt URL]`: the whole system in one command.
# Simulated sewer nodes (the real firmware, in compressed time) send signed frames over UDP
# to the real gateway, which forwards them to MQTT: an embedded broker (amqtt on
# 127.0.0.1) unless --mqtt names one. A live table shows what arrives on P/nodes/+/up, and
# the storm shows as rising wastewater levels. No config files: everything lives in a temp dir.
import argparse
import json
import logging
import secrets
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from protocol.message import F_ALARM, F_STORM
from tools import fleet
from tools.cli import CliError, UsageError, positive

PREFIX = "citynode"
SPARK = "▁▂▃▄▅▆▇█"
SPARK_ASCII = "_.-=+*#@"
HISTORY = 40  # sparkline points per node, one per BUCKET_S of wall time
BUCKET_S = 0.5
LEVEL_FULL_M = 2.8  # top of the sparkline (the shaft is ~3 m deep)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=3, help="simulated nodes, 1..20 (%(default)s)")
    p.add_argument("--duration", type=positive(float, 1e9), help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--mqtt", metavar="URL", help="use this broker (mqtt://host:port) instead of the embedded one")
    p.add_argument("--web", metavar="HOST:PORT", default="127.0.0.1:8080", type=web_arg,
                   help="the gateway's status page (%(default)s; a free port if that one is taken; 'off' for none)")
    # one or the other: a fleet's nodes send over UDP (--lora beside --fleet was once ignored)
    g = p.add_argument_group("instead of nodes on UDP to one gateway").add_mutually_exclusive_group()
    g.add_argument("--lora", action="store_true",
                   help="the nodes send over the simulated LoRa air (SF9, 1 %% duty cycle) to the gateway's radio "
                        "(docs/lora.md)")
    g.add_argument("--fleet", action="store_true",
                   help="a city: a 3-server NATS JetStream cluster, 3 gateways, the relay (its page shows the fleet) "
                        "and nodes heard by 2 or 3 gateways each (docs/fleet.md)")


def web_arg(text: str) -> str:
    import argparse
    import ipaddress

    from tools.cli import hostport, hostport_arg

    if text == "off":
        return text
    hostport_arg(text, lowest=0)  # port 0: any free one
    host = hostport(text, lowest=0)[0]
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:  # the demo's page has no token: it stays on this machine
        raise argparse.ArgumentTypeError(f"{text}: the demo serves its page on loopback only, e.g. 127.0.0.1:8080")
    return text


class Readings:
    # What arrived on P/nodes/+/up, per node (filled by the MQTT thread, read by the table)
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.nodes = {}
        self.frames = 0
        self.keys = set()
        self.duplicates = 0
        self.t0 = time.monotonic()

    def add(self, body: dict[str, Any]) -> None:
        node = body.get("node")
        if not isinstance(node, str):
            return
        values = {}
        for rec in body.get("senml") or []:
            name = rec.get("n")
            if isinstance(name, str) and "v" in rec:
                values[name] = rec["v"]
        key = (node, body.get("boot"), body.get("seq"))
        with self.lock:
            if key in self.keys:
                self.duplicates += 1  # the same frame twice (a fleet must never show one)
                return
            self.keys.add(key)
            st = self.nodes.setdefault(node, {"frames": 0, "levels": [], "peak": 0.0})
            st["frames"] += 1
            st["seq"] = body.get("seq")
            st["boot"] = body.get("boot")
            st["flags"] = body.get("flags", 0)
            st.update({k: values[k] for k in ("l", "t", "h", "p") if k in values})
            if "l" in values:
                # one point per bucket of wall time (the latest level in it), so the trend spans the run
                bucket = int((time.monotonic() - self.t0) / BUCKET_S)
                if st.get("bucket") == bucket and st["levels"]:
                    st["levels"][-1] = values["l"]
                else:
                    st["levels"] = (st["levels"] + [values["l"]])[-HISTORY:]
                st["bucket"] = bucket
                st["peak"] = max(st["peak"], values["l"])
            self.frames += 1

    def snapshot(self) -> tuple[int, dict[str, dict[str, Any]]]:
        with self.lock:
            return self.frames, {k: dict(v, levels=list(v["levels"])) for k, v in self.nodes.items()}


def subscribe(url: str, readings: Readings) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"--mqtt must look like mqtt://host:1883 or mqtts://host:8883, got {url!r}")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"citynode-demo-{secrets.token_hex(3)}",
                         protocol=mqtt.MQTTv311)
    if u.scheme == "mqtts":
        client.tls_set()
    if u.username:
        client.username_pw_set(u.username, u.password)

    def on_connect(c: Any, _userdata: object, _flags: object, reason: Any, _props: object = None) -> None:
        if not reason.is_failure:
            c.subscribe(f"{PREFIX}/nodes/+/up", qos=1)

    def on_message(_c: Any, _userdata: object, msg: Any) -> None:
        try:
            readings.add(json.loads(msg.payload))
        except ValueError:
            pass

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(u.hostname or "127.0.0.1", u.port or (8883 if u.scheme == "mqtts" else 1883), keepalive=30)
    except OSError as e:
        raise RuntimeError(f"cannot reach the MQTT broker at {url} ({e.strerror or e}); start it, or leave out "
                           "--mqtt to use the embedded broker") from None
    client.loop_start()
    return client


def spark(levels: Sequence[float], chars: str) -> str:
    out = []
    for v in levels:
        i = int(max(0.0, min(1.0, v / LEVEL_FULL_M)) * (len(chars) - 1) + 0.5)
        out.append(chars[i])
    return "".join(out)


def num(v: object, decimals: int, width: int) -> str:
    return f"{v:{width}.{decimals}f}" if isinstance(v, int | float) else f"{'-':>{width}}"


def table(readings: Readings, elapsed: float, chars: str) -> list[str]:
    frames, nodes = readings.snapshot()
    world_h = elapsed * fleet.FACTOR / 3600
    lines = [f"citynode demo: {elapsed:5.1f} s ({world_h:4.1f} h of simulated sewer), "
             f"{frames} frames over MQTT from {len(nodes)} nodes",
             f"{'node':8} {'frames':>6} {'seq':>5} {'level m':>8} {'temp C':>7} {'RH %':>5} {'state':7} level trend"]
    for node, st in sorted(nodes.items()):
        flags = st.get("flags") or 0
        state = "ALARM" if flags & F_ALARM else "storm" if flags & F_STORM else "normal"
        lines.append(f"{node:8} {st['frames']:>6} {st.get('seq', ''):>5} {num(st.get('l'), 2, 8)} "
                     f"{num(st.get('t'), 1, 7)} {num(st.get('h'), 0, 5)} {state:7} {spark(st['levels'], chars)}")
    return lines


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web_listen(wanted: str) -> str | None:
    # the asked-for port if it is free, else any free loopback port
    if wanted == "off":
        return None
    host, _, port = wanted.rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as s:
        try:
            s.bind((host.strip("[]"), int(port)))
            return wanted
        except (OSError, ValueError):
            return f"{host}:0"


def start_gateway(tmp: str, keys: dict[str, bytes], mqtt_url: str,
                  web: str | None = None) -> tuple[Any, tuple[str, int]]:
    from gateway.config import parse
    from gateway.daemon import Gateway
    from gateway.keys import format_keys

    keys_file = f"{tmp}/keys.toml"
    with open(keys_file, "w") as f:
        f.write(format_keys(keys))
    port = free_udp_port()
    settings = parse({
        "gateway": {"id": "gw-demo", "data_dir": f"{tmp}/var", "log_level": "warning"},
        "mqtt": {"url": mqtt_url, "topic_prefix": PREFIX, "client_id": f"citynode-demo-gw-{secrets.token_hex(3)}"},
        "ingest": [{"kind": "udp", "listen": f"127.0.0.1:{port}"}],
        "nodes": {"keys_file": keys_file},
        **({"web": {"listen": web, "stale_after_s": 30.0}} if web else {}),
    }, f"{tmp}/gateway.toml")
    return Gateway(settings, keys).start(), ("127.0.0.1", port)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 20:
        raise UsageError("--nodes must be 1..20")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    tty = sys.stdout.isatty()
    chars = SPARK if (sys.stdout.encoding or "").lower().replace("-", "") == "utf8" else SPARK_ASCII
    broker = gateway = client = None
    stop = threading.Event()
    nodes = []
    started = time.monotonic()
    readings = Readings()
    counters: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="citynode-demo-") as tmp:
        try:
            if args.mqtt:
                url = args.mqtt
            else:
                from tools.embedded_broker import EmbeddedBroker

                broker = EmbeddedBroker().start()
                url = broker.url
            print(f"demo: broker {url}{' (embedded amqtt)' if broker else ''}, {args.nodes} simulated nodes, "
                  f"time x{fleet.FACTOR}; " + (f"stops after {args.duration:g} s" if args.duration else "Ctrl-C stops"),
                  file=sys.stderr)
            client = subscribe(url, readings)
            keys = {f"sew-{i + 1:02d}": secrets.token_bytes(16) for i in range(args.nodes)}
            listen = web_listen(args.web)
            if args.fleet:
                from tools.fleetdemo import Fleet

                city = Fleet(tmp, keys, url, listen).start()
                gateway, web = city, city.relay.web if city.relay is not None else None
                nodes = city.nodes(stop)
            elif args.lora:
                from tools.lorademo import LoraCity

                gateway, address = start_gateway(tmp, keys, url, listen)
                web = gateway.web
                nodes = [LoraCity(tmp, keys, address, stop)]
            else:
                gateway, address = start_gateway(tmp, keys, url, listen)
                web = gateway.web
                nodes = [fleet.SimNode(i, node, key, address, f"{tmp}/nodes", stop=stop)
                         for i, (node, key) in enumerate(sorted(keys.items()))]
            if web:
                moved = f" ({args.web} is taken, so another port)" if listen not in (args.web, None) and \
                    not args.web.endswith(":0") else ""
                print(f"demo: status page {web.url}{' and the fleet at ' + web.url + 'fleet' if args.fleet else ''}"
                      f"{moved}", file=sys.stderr)
            for sim in nodes:
                sim.start()
            started = readings.t0 = time.monotonic()
            drawn = 0
            last_print = 0.0
            while args.duration is None or time.monotonic() - started < args.duration:
                time.sleep(0.25)
                elapsed = time.monotonic() - started
                lines = table(readings, elapsed, chars)
                if tty:
                    sys.stdout.write(("\x1b[F" * drawn) + "".join(line + "\x1b[K\n" for line in lines))
                    drawn = len(lines)
                elif elapsed - last_print >= 3:
                    sys.stdout.write("\n".join(lines) + "\n\n")
                    last_print = elapsed
                sys.stdout.flush()
                failed = [n for n in nodes if n.error]
                if failed:
                    print(f"citynode demo: node {failed[0].node_id} stopped: {failed[0].error}", file=sys.stderr)
                    break
        except KeyboardInterrupt:
            pass
        except (OSError, RuntimeError, ValueError) as e:
            raise CliError(str(e)) from None
        finally:
            stop.set()
            for n in nodes:
                n.join(3)
            if gateway is not None:
                time.sleep(0.5)  # the last frames reach the subscriber
                counters = gateway.counters()
                gateway.stop()
            if client is not None:
                client.loop_stop()
                client.disconnect()
            if broker is not None:
                broker.stop()
    frames, seen = readings.snapshot()
    ran_s = min(time.monotonic() - started, args.duration or 1e9)
    if not tty:
        sys.stdout.write("\n".join(table(readings, ran_s, chars)) + "\n")
    peak = max(seen.items(), key=lambda kv: kv[1]["peak"], default=None)
    peak_text = f"; highest level {peak[1]['peak']:.2f} m at {peak[0]}" if peak else ""
    rejected = sum((counters.get("rejected") or {}).values()) if gateway is not None else 0
    via = f" through {len(gateway.gateways)} gateways, JetStream and the relay" if args.fleet and gateway else ""
    dups = f", {readings.duplicates} duplicates" if args.fleet else ""
    print(f"demo: {frames} frames from {len(seen)} nodes reached MQTT{via} in {ran_s:.0f} s"
          f" ({rejected} rejected by the gateway{'s' if via else ''}{dups}){peak_text}")
    return 0 if frames and len(seen) == args.nodes and not readings.duplicates else 1
