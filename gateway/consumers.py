# Optional outputs for consumers that speak SenML or Home Assistant, not citynode's envelope
# ([publish] in gateway.toml, docs/gateway.md). Like every output they return outbox rows,
# stored in the frame's group commit; availability and discovery rows are published
# retained (gateway/outputs.py, retained()).
#   P/nodes/<node>/senml          the bare SenML pack of each frame (the envelope's `senml`)
#   P/nodes/<node>/availability   "online" when a node is heard, "offline" after
#                                 availability_after_s without a frame (sweep())
#   <ha>/sensor/<id>/config       Home Assistant MQTT discovery, once per node and reading
from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.labels import TITLES
from gateway.outputs import _dumps as dumps  # every output's one JSON writer (-2**64, bytes, NaN)
from gateway.registry import Output
from protocol import senml

if TYPE_CHECKING:
    from gateway.outputs import Frame, Row

# SenML unit -> (Home Assistant unit, device class)
HA_UNITS = {"Cel": ("°C", "temperature"), "%RH": ("%", "humidity"), "Pa": ("Pa", "pressure"),
            "m": ("m", "distance"), "V": ("V", "voltage"), "A": ("A", "current"), "dBW": ("dBW", None)}
_PLAIN = re.compile(r"[A-Za-z0-9-]+")
_NOT_ID = re.compile(r"[^A-Za-z0-9-]")


def ha_id(*parts: str) -> str:
    # A Home Assistant unique_id and discovery object id ([A-Za-z0-9_-]) for ("citynode", *parts),
    # one to one: plain parts (letters, digits, "-") are joined with "_" as they are; when a part
    # holds anything else (node ids may hold . : _, names / too) every such character becomes
    # "_" and a hash of the exact parts is appended, so "col.01", "col_01" and "col:01" get three
    # ids. A plain id has exactly len(parts) + 1 "_"-separated fields, a hashed one more: the
    # two kinds never meet.
    if all(_PLAIN.fullmatch(p) for p in parts):
        return "_".join(("citynode",) + parts)
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]
    return "_".join(("citynode",) + tuple(_NOT_ID.sub("_", p) for p in parts) + (digest,))



class SenmlPack(Output):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def messages(self, f: Frame) -> list[Row]:
        pack = senml.to_json(f.msg["records"], base_name=f.node + ":", base_time=round(f.time_s, 3))
        for rec in pack:  # only registered labels: text-labelled extensions stay in the envelope's ext
            for k in [k for k in rec if k not in _LABELS]:
                del rec[k]
        return [(f"{self.prefix}/nodes/{f.node}/senml", dumps(pack))]


_LABELS = set(senml.JSON_LABELS.values())


class Availability(Output):
    def __init__(self, prefix: str, after_s: float) -> None:
        self.prefix = prefix
        self.after_s = after_s
        self.heard = {}  # node -> latest reception time
        self.online = set()
        self.unsure = set()  # nodes whose "offline" a failed commit may have lost (reset())
        self.swept = 0.0

    def messages(self, f: Frame) -> list[Row]:
        if f.received > self.heard.get(f.node, 0.0):
            self.heard[f.node] = f.received
        if f.node in self.online:
            return []
        self.online.add(f.node)
        self.unsure.discard(f.node)
        return [(f"{self.prefix}/nodes/{f.node}/availability", b"online")]

    def sweep(self, now: float) -> list[Row]:
        # -> rows for nodes not heard for after_s (the pipeline calls it with every batch and
        # while idle; it looks at most once a second)
        if now - self.swept < 1.0:
            return []
        self.swept = now
        out = []
        nodes = self.online | self.unsure if self.unsure else self.online
        for node in [n for n in nodes if now - self.heard[n] > self.after_s]:
            self.online.discard(node)
            self.unsure.discard(node)
            out.append((f"{self.prefix}/nodes/{node}/availability", b"offline"))
        return out

    def reset(self) -> None:
        # a failed commit lost what messages() or sweep() returned: "online" is said again with
        # the node's next frame, "offline" with the next sweep that finds it silent (once more
        # for a node whose "offline" did arrive: the same retained value)
        self.online.clear()
        self.unsure.update(self.heard)


class HomeAssistant(Output):
    def __init__(self, prefix: str, gateway_id: str, discovery_prefix: str = "homeassistant",
                 availability: bool = False,
                 expire_s: float = 0) -> None:
        self.prefix = prefix
        self.gateway_id = gateway_id
        self.discovery_prefix = discovery_prefix
        self.availability = availability
        self.expire_s = expire_s
        self.announced = set()  # (node, reading); None: the gateway device

    def messages(self, f: Frame) -> list[Row]:
        out = []
        if None not in self.announced:  # the device the nodes' via_device names, announced first
            self.announced.add(None)
            out.append(self._gateway_config())
        for rec in f.msg["records"]:
            name = rec.get(senml.N)
            key = (f.node, name)
            if key in self.announced or senml.V not in rec:
                continue
            self.announced.add(key)
            out.append(self._config(f.node, name, rec.get(senml.U) or senml.unit_of(name)))
        return out

    def reset(self) -> None:
        self.announced.clear()

    def _gateway_config(self) -> Row:
        # the gateway as a device of its own: a connectivity sensor on its retained state topic
        # (online with counters, offline as its last will)
        uid = ha_id(self.gateway_id)
        cfg = {
            "name": "Connection",
            "unique_id": uid,
            "state_topic": f"{self.prefix}/gateways/{self.gateway_id}/state",
            "value_template": "{{ value_json.state }}",
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "device": {"identifiers": [uid], "name": f"citynode gateway {self.gateway_id}",
                       "manufacturer": "citynode", "model": "gateway", "sw_version": __version__},
        }
        return (f"{self.discovery_prefix}/binary_sensor/{uid}/config", dumps(cfg))

    def _config(self, node: str, name: str, unit: str | None) -> Row:
        uid = ha_id(self.gateway_id, node, name)
        avail = [{"topic": f"{self.prefix}/gateways/{self.gateway_id}/state",
                  "value_template": "{{ value_json.state }}"}]
        if self.availability:
            avail.append({"topic": f"{self.prefix}/nodes/{node}/availability"})
        cfg = {
            "name": TITLES.get(name, name),
            "unique_id": uid,
            "state_topic": f"{self.prefix}/nodes/{node}/up",
            # the reading's value in the envelope's SenML pack; a frame without it keeps the state
            "value_template": "{% set r = value_json.senml | selectattr('n', 'eq', '" + name + "') | list %}"
                              "{{ r[0].v if r else this.state }}",
            "availability": avail,
            "availability_mode": "all",
            "state_class": "measurement",
            "device": {"identifiers": [ha_id(node)], "name": node, "manufacturer": "citynode",
                       "via_device": ha_id(self.gateway_id)},
        }
        ha = HA_UNITS.get(unit) if unit else None
        if unit:
            cfg["unit_of_measurement"] = ha[0] if ha else unit
        if ha and ha[1]:
            cfg["device_class"] = ha[1]
        if self.expire_s:
            cfg["expire_after"] = int(self.expire_s)
        return (f"{self.discovery_prefix}/sensor/{uid}/config", dumps(cfg))
