# Outputs turn one accepted frame into MQTT messages [(topic, payload bytes)]. They all
# implement messages(frame); the pipeline stores what they return in the outbox in the
# same group commit, so every output is as durable as the `up` envelope.
from __future__ import annotations

import base64
import hashlib
import json
import math
import time
import uuid
from typing import TYPE_CHECKING, Any, TypeAlias

import orjson

from gateway.labels import FLAGS, QUALITY
from gateway.registry import Output
from protocol import senml
from protocol.command import RESULTS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from gateway.config import StreamMapping

Row: TypeAlias = tuple[str, bytes]  # an outbox row: (topic, payload)

_iso_second = (None, "")  # the last second formatted: most frames share it


def iso(t: float) -> str:
    # Unix seconds -> ISO 8601 UTC with milliseconds ("2026-05-01T12:00:00.250Z"). Four-digit
    # years only: the times given reach it so (gateway/timing.py dates no frame before 1970 nor
    # more than a day after its reception, a gateway's clock or, at the relay, one from 2000 on:
    # SPEC.md 8; a record's offset is under 2^28 s, SPEC.md 5)
    global _iso_second
    s, ms = divmod(int(round(t * 1000)), 1000)
    cached = _iso_second
    if cached[0] != s:
        cached = _iso_second = (s, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)))
    return "%s.%03dZ" % (cached[1], ms)


def _dumps(obj: object) -> bytes:
    # orjson: compact UTF-8, key order kept, NaN/infinity as null; ~8x faster than json here
    try:
        return orjson.dumps(obj)
    except TypeError:  # bytes in a SenML extension, a non-text key, an integer beyond 64 bits
        return json.dumps(_json_safe(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _json_safe(x: object) -> object:
    # JSON has no NaN, infinity or bytes: null and base64 instead (`frame` keeps the original)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, bytes | bytearray):
        return base64.b64encode(x).decode()
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


# Outbox rows have a topic and a payload; these topics are published retained: a node's
# forecast (gateway/forecast.py), availability and Home Assistant discovery config
# (gateway/consumers.py).
RETAINED_SUFFIXES = ("/forecast", "/availability", "/config")


def retained(topic: str) -> bool:
    return topic.endswith(RETAINED_SUFFIXES)


class Frame:
    # One accepted data frame and what the gateway knows about it.
    __slots__ = ("node", "msg", "raw", "received", "time_s", "time_source", "link", "radio", "gateway")

    def __init__(self, node: str, msg: dict[str, Any], raw: bytes, received: float, time_s: float, time_source: str,
                 link: str, radio: dict[str, float] | None = None, gateway: str | None = None) -> None:
        self.node = node
        self.msg = msg  # protocol.message.decode() result
        self.raw = raw  # the original COSE_Mac0 bytes
        self.received = received  # gateway Unix time of reception
        self.time_s = time_s  # absolute sampling time, fixed per SPEC section 8
        self.time_source = time_source  # "node" | "received" | "uptime" | "uncertain"
        self.link = link  # "udp 127.0.0.1:40000" / "serial /dev/ttyUSB0"
        self.radio = radio  # {"rssi_dbm", "snr_db"} of a frame heard over LoRa, else None
        self.gateway = gateway  # the gateway that heard it, at the relay (its `up` names that one); else None


class Envelope(Output):
    # P/nodes/<node>/up: the contract payload (docs/gateway.md, "MQTT topics"), plus time_source.
    # Required: the frame's own record; a frame without it is refused, not stored without it.
    required = True

    def __init__(self, prefix: str, gateway_id: str) -> None:
        self.prefix = prefix
        self.gateway_id = gateway_id

    def messages(self, f: Frame) -> list[Row]:
        m = f.msg
        body = {
            "node": f.node, "boot": m["boot"], "seq": m["seq"],
            "time": iso(f.time_s), "time_source": f.time_source, "received": iso(f.received),
            "gateway": f.gateway or self.gateway_id, "uptime_ms": m["uptime_ms"],
            "senml": senml.to_json(m["records"], base_name=f.node + ":", base_time=round(f.time_s, 3)),
            "frame": base64.b64encode(f.raw).decode(),
        }
        if m["flags"]:
            body["flags"] = m["flags"]
        if m["quality"]:
            body["quality"] = {str(k): v for k, v in m["quality"].items()}
        if f.radio:  # the reception of a frame heard over LoRa (radio modem, ChirpStack)
            body["radio"] = f.radio
        if m["cmd_result"]:  # the result of a command (SPEC 6.7), as in P/nodes/<node>/state
            cmd_id, status = m["cmd_result"]
            body["command"] = {"cmd_id": cmd_id, "status": status,
                               "result": RESULTS[status] if status < len(RESULTS) else str(status)}
        ext = _extensions(body["senml"], m["records"])
        if ext:
            body["ext"] = ext
        return [(f"{self.prefix}/nodes/{f.node}/up", _dumps(body))]


def _extensions(pack: list[dict[str, Any]], records: list[dict[Any, Any]]) -> dict[str, dict[str, Any]] | None:
    # Text-labelled fields a node added to a record are no registered SenML labels (RFC 8428
    # section 12.2): they leave the pack, which stays strict, for "ext" {record index: {label: value}}.
    ext = None
    for i, rec in enumerate(records):
        for k in rec:
            if isinstance(k, str):
                if ext is None:
                    ext = {}
                ext.setdefault(str(i), {})[k] = pack[i].pop(k)
    return ext


def _value(rec: dict[Any, Any]) -> Any:
    for label in (senml.V, senml.VS, senml.VB):
        if label in rec:
            return rec[label]
    return None


def observation_id(path: str, node: str, boot: int, seq: int, index: int, integer: bool) -> int | str:
    # A deterministic SensorThings @iot.id for one reading of one frame in one Datastream:
    # the same on every resend and on every gateway that hears the frame
    basis = f"{path}\n{node}\n{boot}\n{seq}\n{index}".encode()
    if integer:
        return (int.from_bytes(hashlib.sha256(basis).digest()[:8], "big") & 0x7FFFFFFFFFFFFFFF) or 1
    return str(uuid.uuid5(_ST_NAMESPACE, basis.decode()))


_ST_NAMESPACE = uuid.UUID("6b1d2a4e-1c3f-5e0a-9b7d-2f4c8e6a0d11")  # citynode Observations (fixed)


def datastream_path(version: str, ds: int | str) -> str:
    # OData key syntax: an integer as it is, a string quoted with ' doubled (FROST's PathParser)
    key = str(ds) if isinstance(ds, int) else "'" + ds.replace("'", "''") + "'"
    return f"{version}/Datastreams({key})/Observations"


class SensorThings(Output):
    # OGC SensorThings v1.1 Observations for the [[sensorthings]] mappings: (node, reading) ->
    # Datastream id, or a template (node "*") whose string id has the node filled in.
    # resultQuality carries the reading's quality, parameters the provenance and the flags.
    # table: None puts the rows in the outbox the [mqtt] broker gets; "sensorthings" in the
    # outbox of the [sensorthings_server] connection (gateway/sensorthings.py).
    # ids: each Observation gets an @iot.id made of (Datastream, node, boot, seq, record), so a
    # resend of one already created is refused by FROST instead of stored twice (FROST needs
    # persistence.idGenerationMode ServerAndClientGenerated or ClientGeneratedOnly; its default,
    # ServerGeneratedOnly, ignores the id). Integer Datastream ids -> a 63-bit integer id, string
    # ones -> a UUID string (FROST's STRING and UUID id types both take it).
    def __init__(self, mappings: Iterable[StreamMapping], gateway_id: str, version: str = "v1.1",
                 table: str | None = None, ids: bool = True) -> None:
        self.streams = {(m.node, m.reading): datastream_path(version, m.datastream)
                        for m in mappings if m.node != "*"}
        self.templates = {m.reading: (version, str(m.datastream)) for m in mappings if m.node == "*"}  # str: config.py
        self.integer_ids = {m.reading for m in mappings if m.node == "*" and isinstance(m.datastream, int)} | {
            (m.node, m.reading) for m in mappings if m.node != "*" and isinstance(m.datastream, int)}
        self.gateway_id = gateway_id
        self.table = table
        self.ids = ids

    def _path(self, node: str, reading: str) -> str | None:
        path = self.streams.get((node, reading))
        if path is None:
            t = self.templates.get(reading)
            if t is not None:
                path = self.streams[(node, reading)] = datastream_path(t[0], t[1].replace("{node}", node))
        return path

    def messages(self, f: Frame) -> list[Row]:
        out = []
        m = f.msg
        quality = m["quality"]
        flags = m["flags"]
        params = None
        for i, rec in enumerate(m["records"]):
            path = self._path(f.node, rec.get(senml.N))
            value = _value(rec)
            if path is None or value is None:
                continue
            if params is None:
                params = {"node": f.node, "boot": m["boot"], "seq": m["seq"], "gateway": self.gateway_id,
                          "time_source": f.time_source, "frame": base64.b64encode(f.raw).decode()}
                if f.time_source == "uncertain":
                    # SPEC.md 8: a buffered frame of a boot never heard live: its time is only an
                    # upper bound (the frame was sampled then or earlier), not a measured instant
                    params["time_uncertain"] = True
                    params["phenomenonTime_latest"] = iso(f.time_s)
                for bit, name in FLAGS:
                    if flags & bit:
                        params[name] = True
            t = f.time_s + (rec.get(senml.T) or 0)
            obs = {"phenomenonTime": iso(t), "resultTime": iso(f.received),
                   "result": senml.json_number(value) if isinstance(value, float) else value,
                   "parameters": params}
            if self.ids:
                name = rec.get(senml.N)
                obs["@iot.id"] = observation_id(path, f.node, m["boot"], m["seq"], i,
                                                (f.node, name) in self.integer_ids or name in self.integer_ids)
            q = quality.get(i)
            if q is not None:
                obs["resultQuality"] = {"status": QUALITY.get(q[2], q[2]), "samples": q[0], "rejected": q[1]}
            out.append((path, _dumps(obs)))
        return out


class Aggregates(Output):
    # min/mean/max/count per node and numeric reading over fixed wall-clock windows,
    # published to P/nodes/<node>/agg when the first frame of a later window arrives.
    # The open window lives in memory: a restart loses at most that window's aggregate.
    def __init__(self, prefix: str, window_s: float) -> None:
        self.prefix = prefix
        self.window_s = window_s
        self.open = {}  # node -> (window index, {name: [min, sum, max, count, unit]})

    def messages(self, f: Frame) -> list[Row]:
        w = int(f.time_s // self.window_s)
        cur = self.open.get(f.node)
        out = []
        if cur is not None and w < cur[0]:
            return out  # a late backlog frame: its window was already published
        if cur is not None and w > cur[0]:
            out.append(self._publish(f.node, *cur))
            cur = None
        if cur is None:
            cur = (w, {})
            self.open[f.node] = cur
        acc = cur[1]
        for rec in f.msg["records"]:
            v = rec.get(senml.V)
            name = rec.get(senml.N)
            if not isinstance(v, int | float) or isinstance(v, bool):
                continue
            a = acc.get(name)
            if a is None:
                acc[name] = [v, v, v, 1, rec.get(senml.U) or senml.unit_of(name)]
            else:
                a[0] = min(a[0], v)
                a[1] += v
                a[2] = max(a[2], v)
                a[3] += 1
        return out

    def _publish(self, node: str, w: int, acc: dict[str, list[Any]]) -> Row:
        readings = {name: {"min": senml.json_number(a[0]), "mean": round(a[1] / a[3], 6),
                           "max": senml.json_number(a[2]), "count": a[3], "u": a[4]} for name, a in acc.items()}
        body = {"node": node, "start": iso(w * self.window_s), "end": iso((w + 1) * self.window_s),
                "window_s": self.window_s, "readings": readings}
        return (f"{self.prefix}/nodes/{node}/agg", _dumps(body))
