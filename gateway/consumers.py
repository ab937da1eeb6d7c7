# Optional outputs for consumers that speak SenML or Home Assistant, not citynode's envelope
# ([publish] in gateway.toml, docs/gateway.md). Like every output they return outbox rows,
# stored in the frame's group commit; availability and discovery rows are published
# retained (gateway/outputs.py, retained()).
#   P/nodes/<node>/senml          the bare SenML pack of each frame (the envelope's `senml`)
#   P/nodes/<node>/availability   "online" when a node is heard, "offline" after
#                                 availability_after_s without a frame (sweep())
#   <ha>/sensor/<id>/config       Home Assistant MQTT discovery, once per node and reading
import re

import orjson

from protocol import senml

# SenML unit -> (Home Assistant unit, device class)
HA_UNITS = {"Cel": ("°C", "temperature"), "%RH": ("%", "humidity"), "Pa": ("Pa", "pressure"),
            "m": ("m", "distance"), "V": ("V", "voltage"), "A": ("A", "current"), "dBW": ("dBW", None)}
TITLES = {"t": "Temperature", "h": "Humidity", "p": "Pressure", "l": "Water level", "d": "Distance to water",
          "b": "Battery", "i": "Loop current", "r": "Signal strength"}
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")


class SenmlPack:
    def __init__(self, prefix):
        self.prefix = prefix

    def messages(self, f):
        pack = senml.to_json(f.msg["records"], base_name=f.node + ":", base_time=round(f.time_s, 3))
        for rec in pack:  # only registered labels: text-labelled extensions stay in the envelope's ext
            for k in [k for k in rec if k not in _LABELS]:
                del rec[k]
        return [(f"{self.prefix}/nodes/{f.node}/senml", orjson.dumps(pack))]


_LABELS = set(senml.JSON_LABELS.values())


class Availability:
    def __init__(self, prefix, after_s):
        self.prefix = prefix
        self.after_s = after_s
        self.heard = {}  # node -> latest reception time
        self.online = set()
        self.swept = 0.0

    def messages(self, f):
        if f.received > self.heard.get(f.node, 0.0):
            self.heard[f.node] = f.received
        if f.node in self.online:
            return []
        self.online.add(f.node)
        return [(f"{self.prefix}/nodes/{f.node}/availability", b"online")]

    def sweep(self, now):
        # -> rows for nodes not heard for after_s (the pipeline calls it with every batch and
        # while idle; it looks at most once a second)
        if now - self.swept < 1.0:
            return []
        self.swept = now
        out = []
        for node in [n for n in self.online if now - self.heard[n] > self.after_s]:
            self.online.discard(node)
            out.append((f"{self.prefix}/nodes/{node}/availability", b"offline"))
        return out

    def reset(self):
        # a failed commit lost what messages() returned: say it again with the next frame
        self.online.clear()


class HomeAssistant:
    def __init__(self, prefix, gateway_id, discovery_prefix="homeassistant", availability=False, expire_s=0):
        self.prefix = prefix
        self.gateway_id = gateway_id
        self.discovery_prefix = discovery_prefix
        self.availability = availability
        self.expire_s = expire_s
        self.announced = set()  # (node, reading)

    def messages(self, f):
        out = []
        for rec in f.msg["records"]:
            name = rec.get(senml.N)
            key = (f.node, name)
            if key in self.announced or senml.V not in rec:
                continue
            self.announced.add(key)
            out.append(self._config(f.node, name, rec.get(senml.U) or senml.unit_of(name)))
        return out

    def reset(self):
        self.announced.clear()

    def _config(self, node, name, unit):
        uid = _NOT_ID.sub("_", f"citynode_{self.gateway_id}_{node}_{name}")
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
            "device": {"identifiers": [_NOT_ID.sub("_", f"citynode_{node}")], "name": node,
                       "manufacturer": "citynode", "via_device": _NOT_ID.sub("_", f"citynode_{self.gateway_id}")},
        }
        ha = HA_UNITS.get(unit)
        if unit:
            cfg["unit_of_measurement"] = ha[0] if ha else unit
        if ha and ha[1]:
            cfg["device_class"] = ha[1]
        if self.expire_s:
            cfg["expire_after"] = int(self.expire_s)
        return (f"{self.discovery_prefix}/sensor/{uid}/config", orjson.dumps(cfg))
