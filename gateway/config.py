# gateway.toml -> frozen settings. Every problem becomes one ConfigError line that names
# the key ("[mqtt] url: ..."), so `citynode gateway` can refuse a bad file with exit 2.
# Relative paths (data_dir, keys_file, TLS files) are relative to the config file.
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import pathlib
import re
import stat
import tomllib
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from gateway import InputError
from protocol.message import check_node_id
from protocol.names import NODE_ID_RULE


class ConfigError(InputError):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class Endpoint:
    # A connection the gateway makes: [mqtt] and [sensorthings_server] (parsed by _endpoint)
    url: str
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    client_id: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MqttSettings(Endpoint):
    topic_prefix: str = "citynode"
    keepalive_s: int = 30
    inflight: int = 1000  # unacknowledged QoS 1 publishes; paho's message ids wrap at 65535
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    state_interval_s: float = 30.0  # retained node and gateway state, at most this often
    publisher: str = "thread"  # "thread": in-process; "process": paho in a child process (its own core)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NatsSettings:
    # [nats]: the city's JetStream cluster (gateway/natsout.py, docs/fleet.md). The stream
    # settings are what the gateway creates the stream with when it does not exist yet.
    servers: tuple[str, ...]
    stream: str = "CITYNODE"
    subject_prefix: str = "citynode"  # frames go to <prefix>.f.<node>.<boot>.<seq>
    replicas: int = 3
    retention_h: float = 168.0  # the stream keeps a frame (and so deduplicates it) this long
    duplicate_window_s: float = 120.0  # Nats-Msg-Id deduplication: the fast path
    inflight: int = 1000  # publishes awaiting the stream's ack
    ack_timeout_s: float = 10.0  # a publish not acked this long is sent again (from the outbox)
    heartbeat_s: float = 5.0  # the gateway's fleet heartbeat on <prefix>.gateways.<id>
    durable: str = "relay"  # the relay's durable consumer (citynode relay)
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)
    creds: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestSettings:
    kind: str  # "udp" | "serial" | "chirpstack"
    listen: tuple[str, int] | None = None
    port: str | None = None
    baudrate: int = 115200
    # chirpstack: ChirpStack v4's MQTT integration (gateway/chirpstack.py)
    url: str | None = None  # redacted: the password stays in .password
    host: str | None = None
    broker_port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    application: str = "+"
    fport: int = 10
    downlink: bool = False
    client_id: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutboxSettings:
    max_messages: int = 1_000_000  # outbox rows; when full new frames are refused (not ACKed), nodes keep them
    max_bytes: int = 0  # 0: no cap of its own; SQLite reports "disk full" at this size
    min_free_mb: int = 50  # refuse new frames below this much free disk
    batch_max: int = 512  # frames per group commit
    linger_ms: int = 20  # a commit waits up to this long after its first frame for more to join it


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamMapping:
    node: str  # a node id, or "*": a template for every node in the keys file
    reading: str
    datastream: int | str  # a string may hold "{node}", filled in per node
    where: str = ""  # "[sensorthings.3]", for messages


@dataclasses.dataclass(frozen=True, kw_only=True)
class SensorThingsServer(Endpoint):
    # Where Observations go when not to the [mqtt] broker: FROST creates entities only from
    # messages to its own broker (mqtt://, mqtts://) or from HTTP POSTs (http://, https://).
    mode: str  # "mqtt" | "http"
    path: str = ""  # HTTP: the service root path, e.g. "/FROST-Server"
    version: str = "v1.1"
    timeout_s: float = 10.0
    retry_min_s: float = 1.0
    retry_max_s: float = 300.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ForecastSettings:
    enabled: bool = True  # only nodes that send a level reading ("l") get a forecast
    lead_s: float = 900.0  # warn when the alarm level may be reached within this time
    alarm_m: float = 2.2  # until a node reports its own alarm level (the firmware default)
    min_confidence: float = 0.4
    # shaft node -> the rain gauge nodes of its catchment ("rain" records); a node's own
    # gauge counts for its own shaft unless it is listed here
    rain_gauges: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class PublishSettings:
    # [publish]: optional topics for SenML-only and Home Assistant consumers (gateway/consumers.py)
    senml: bool = False  # P/nodes/<node>/senml, the bare pack
    availability: bool = False  # P/nodes/<node>/availability, retained online/offline
    availability_after_s: float = 900.0  # offline after this long without a frame
    homeassistant: bool = False  # MQTT discovery configs, retained
    homeassistant_prefix: str = "homeassistant"
    sensorthings_ids: bool = True  # a deterministic @iot.id per Observation (FROST: ServerAndClientGenerated)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    path: str
    gateway_id: str
    data_dir: pathlib.Path
    keys_file: pathlib.Path
    mqtt: MqttSettings | None  # None: [nats] only
    ingest: tuple[IngestSettings, ...]
    nats: NatsSettings | None = None
    outbox: OutboxSettings = OutboxSettings()
    queue_max: int = 10_000  # verified-frame input queue; beyond it input is refused and counted
    log_level: str = "info"
    downlink_max_per_node: int = 16
    downlink_attempts: int = 5
    aggregate_window_s: float = 0.0  # 0: no aggregates
    sensorthings: tuple[StreamMapping, ...] = ()
    sensorthings_server: SensorThingsServer | None = None
    publish: PublishSettings = PublishSettings()
    web_listen: str | None = None
    web_token: str | None = dataclasses.field(default=None, repr=False)
    web_stale_after_s: float | None = None
    web_hosts: tuple[str, ...] = ()  # Host names the status page answers to besides loopback names and IPs
    forecast: ForecastSettings = ForecastSettings()


class _Table:
    # Reads one TOML table, remembering which keys were used so unknown ones are refused.
    def __init__(self, data: object, name: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"[{name}]: must be a table")
        self.data = data
        self.name = name
        self.used = set()

    def err(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"[{self.name}] {key}: {problem}")

    def get(self, key: str, kind: Any, default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.err(key, "missing (required)")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.err(key, f"must be {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}")
        return value

    def number(self, key: str, default: float, lo: float, hi: float | None = None, kind: type = int) -> Any:
        v = self.get(key, kind, default)
        if v < lo or (hi is not None and v > hi):
            raise self.err(key, f"must be between {lo} and {hi}, got {v}" if hi is not None else f"must be >= {lo}")
        return v

    def finish(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise self.err(extra[0], "unknown key")


def _rain_gauges(fc: _Table) -> tuple[tuple[str, tuple[str, ...]], ...]:
    # [forecast] rain_gauges = {"sew-01" = ["rg-01", "sew-02"]}
    table = fc.get("rain_gauges", dict, {})
    out = []
    for shaft, gauges in table.items():
        if not isinstance(gauges, list) or not gauges or not all(isinstance(g, str) and g for g in gauges):
            raise fc.err("rain_gauges", f"{shaft}: must be a non-empty list of node ids, got {gauges!r}")
        out.append((shaft, tuple(gauges)))
    return tuple(out)


_KIND_NAMES = {int | str: "an integer or a string",
               str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "a table"}


def split_hostport(text: object, lowest: int = 0) -> tuple[str, int]:
    # The one HOST:PORT rule of the gateway (ingest, status page) and of every citynode option:
    # "host:port" or "[v6]:port", the port lowest..65535 (0: a listener that takes any free one);
    # ValueError saying what is wrong otherwise
    host, sep, port = str(text or "").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:5683 (got {text!r})")
    if not lowest <= int(port) <= 65535:
        raise ValueError(f"{text}: port {port} is not {lowest}..65535")
    return host, int(port)


def parse_hostport(text: str, where: Callable[[str], Exception]) -> tuple[str, int]:
    try:
        return split_hostport(text)
    except ValueError as e:
        raise where(str(e)) from None


def _tls_files(t: _Table, base: pathlib.Path) -> dict[str, str]:
    # [mqtt] and [sensorthings_server]: ca, cert and key, each an existing file -> {key: path}
    files = {}
    for k in ("ca", "cert", "key"):
        v = t.get(k, str)
        if v is not None:
            p = _path(base, v)
            if not p.is_file():
                raise t.err(k, f"no such file: {p}")
            files[k] = str(p)
    return files


def _host_port(t: _Table, u: urllib.parse.SplitResult, url: str, default_port: int) -> int:
    # [mqtt] and [sensorthings_server]: the url's host and port (its scheme's default)
    if not u.hostname:
        raise t.err("url", f"has no host: {url!r}")
    try:
        return u.port or default_port
    except ValueError:
        raise t.err("url", f"bad port in {url!r}") from None


def _endpoint(t: _Table, base: pathlib.Path, u: urllib.parse.SplitResult, tls: bool, plain_hint: str = "") -> dict[str,
              Any]:
    # [mqtt] and [sensorthings_server]: TLS files and login -> Endpoint fields
    files = _tls_files(t, base)
    if files and not tls:
        raise t.err(next(iter(files)), f"TLS files given but url is {u.scheme}://; use {u.scheme}s://{plain_hint}")
    if ("cert" in files) != ("key" in files):
        raise t.err("cert" if "key" in files else "key", "cert and key go together")
    username = t.get("username", str, u.username)
    password = t.get("password", str, u.password)
    if password is not None and username is None:
        raise t.err("password", "given without username")
    return {"username": username, "password": password, "ca": files.get("ca"), "cert": files.get("cert"),
            "key": files.get("key")}


def _path(base: pathlib.Path, value: str) -> pathlib.Path:
    p = pathlib.Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _mqtt(t: _Table, base: pathlib.Path, gw_id: str) -> MqttSettings:
    url = t.get("url", str, required=True)
    u = urllib.parse.urlsplit(url)
    url = redact_url(url)  # the url is kept for messages and logs only: the password stays in .password
    if u.scheme not in ("mqtt", "mqtts"):
        raise t.err("url", f"must start with mqtt:// or mqtts://, got {url!r}")
    tls = u.scheme == "mqtts"
    port = _host_port(t, u, url, 8883 if tls else 1883)
    prefix = t.get("topic_prefix", str, "citynode")
    if not prefix or any(c in prefix for c in "+#") or prefix.startswith("/") or prefix.endswith("/"):
        raise t.err("topic_prefix", f"must be a non-empty topic without + # or a leading/trailing /, got {prefix!r}")
    m = MqttSettings(
        url=url, host=u.hostname, port=port, tls=tls, topic_prefix=prefix,
        client_id=t.get("client_id", str, f"citynode-{gw_id}"), **_endpoint(t, base, u, tls, " (never plain text)"),
        keepalive_s=t.number("keepalive_s", 30, 5, 3600),
        inflight=t.number("inflight", 1000, 1, 20_000),
        reconnect_min_s=t.number("reconnect_min_s", 0.5, 0.01, 60, float),
        reconnect_max_s=t.number("reconnect_max_s", 30.0, 0.1, 3600, float),
        state_interval_s=t.number("state_interval_s", 30.0, 0.1, 86400, float),
        publisher=t.get("publisher", str, "thread"),
    )
    if m.publisher not in ("process", "thread"):
        raise t.err("publisher", f"must be \"process\" or \"thread\", got {m.publisher!r}")
    t.finish()
    return m


def _nats(t: _Table, base: pathlib.Path) -> NatsSettings:
    servers = t.get("servers", list, required=True)
    if not servers or not all(isinstance(x, str) for x in servers):
        raise t.err("servers", "must be a non-empty list of urls (nats://host:4222 or tls://host:4222)")
    for url in servers:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("nats", "tls") or not u.hostname:
            raise t.err("servers", f"must be nats://HOST:PORT or tls://HOST:PORT, got {redact_url(url)!r}")
        try:
            u.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise t.err("servers", f"bad port in {redact_url(url)!r}") from None
    stream = t.get("stream", str, "CITYNODE")
    if not stream or any(c in stream for c in " .*>/\\\t"):
        raise t.err("stream", f"must be a stream name without spaces . * > / \\, got {stream!r}")
    prefix = t.get("subject_prefix", str, "citynode")
    if not prefix or any(c in prefix for c in " *>\t") or prefix.startswith(".") or prefix.endswith("."):
        raise t.err("subject_prefix", f"must be a subject without spaces * > or a leading/trailing ., got {prefix!r}")
    durable = t.get("durable", str, "relay")
    if not durable or any(c in durable for c in " .*>/\\\t"):
        raise t.err("durable", f"must be a consumer name without spaces . * > / \\, got {durable!r}")
    files = _tls_files(t, base)
    creds = t.get("creds", str)
    if creds is not None:
        creds = _path(base, creds)
        if not creds.is_file():
            raise t.err("creds", f"no such file: {creds}")
        creds = str(creds)
    if ("cert" in files) != ("key" in files):
        raise t.err("cert" if "key" in files else "key", "cert and key go together")
    username, password, token = t.get("username", str), t.get("password", str), t.get("token", str)
    if password is not None and username is None:
        raise t.err("password", "given without username")
    window = t.number("duplicate_window_s", 120.0, 1.0, 86400.0, float)
    retention = t.number("retention_h", 168.0, 1.0, 24 * 3650.0, float)
    if window > retention * 3600:
        raise t.err("duplicate_window_s", "must not be longer than retention_h")
    n = NatsSettings(servers=tuple(servers), stream=stream, subject_prefix=prefix, durable=durable,
                     replicas=t.number("replicas", 3, 1, 5), retention_h=retention, duplicate_window_s=window,
                     inflight=t.number("inflight", 1000, 1, 100_000),
                     ack_timeout_s=t.number("ack_timeout_s", 10.0, 0.5, 600.0, float),
                     heartbeat_s=t.number("heartbeat_s", 5.0, 0.1, 3600.0, float),
                     username=username, password=password, token=token, creds=creds, **files)
    t.finish()
    return n


def _ingest(entries: object, base: pathlib.Path) -> tuple[IngestSettings, ...]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError("[[ingest]]: at least one ingest (kind = \"udp\", \"serial\" or \"chirpstack\") is required")
    out = []
    for i, entry in enumerate(entries):
        t = _Table(entry, f"ingest.{i}")
        kind = t.get("kind", str, required=True)
        if kind == "udp":
            listen = t.get("listen", str, required=True)
            out.append(IngestSettings(kind="udp", listen=parse_hostport(listen, lambda p, t=t: t.err("listen", p))))
        elif kind == "serial":
            port = t.get("port", str, required=True)
            if "://" not in port and not port.startswith("/"):
                port = str(_path(base, port))  # relative to the config file, like every path here
            out.append(IngestSettings(kind="serial", port=port,
                                      baudrate=t.number("baudrate", 115200, 50, 4_000_000)))
        elif kind == "chirpstack":
            url = t.get("url", str, required=True)
            u = urllib.parse.urlsplit(url)
            shown = redact_url(url)
            if u.scheme not in ("mqtt", "mqtts"):
                raise t.err("url", f"must start with mqtt:// or mqtts://, got {shown!r}")
            tls = u.scheme == "mqtts"
            app = t.get("application", str, "+")
            if not app or "/" in app or "#" in app or ("+" in app and app != "+"):
                raise t.err("application", f"must be an application id or +, got {app!r}")
            port = _host_port(t, u, shown, 8883 if tls else 1883)
            out.append(IngestSettings(
                kind="chirpstack", url=shown, host=u.hostname, broker_port=port, tls=tls, username=u.username,
                password=u.password, application=app,
                fport=t.number("fport", 10, 1, 223), downlink=t.get("downlink", bool, False),
                client_id=t.get("client_id", str, "")))
        else:
            raise t.err("kind", f"must be \"udp\", \"serial\" or \"chirpstack\", got {kind!r}")
        t.finish()
    return tuple(out)


def _sensorthings(entries: object) -> tuple[StreamMapping, ...]:
    # [[sensorthings]] node (or "*", the default: every node), reading, datastream. Checks that
    # need the keys file (does the node exist?) are in check_mappings.
    from protocol import senml

    if not isinstance(entries, list):
        raise ConfigError("[[sensorthings]]: must be an array of tables")
    out = []
    seen = {}
    streams = {}
    for i, entry in enumerate(entries):
        where = f"sensorthings.{i}"
        t = _Table(entry, where)
        node = t.get("node", str, "*")
        reading = t.get("reading", str, required=True)
        if reading not in senml.NAMES:
            raise t.err("reading", f"{reading!r} is no reading a node sends (one of {', '.join(senml.NAMES)})")
        ds = t.get("datastream", int | str, required=True)
        if isinstance(ds, bool) or (isinstance(ds, int) and ds < 1):
            raise t.err("datastream", f"must be a Datastream id >= 1 or a string id, got {ds!r}")
        if isinstance(ds, str) and (not ds or any(ord(c) < 0x20 or c in "/+#" for c in ds)):
            raise t.err("datastream", f"must be a non-empty string id without / + # or control characters (it is "
                                      f"part of an MQTT topic and a URL path), got {ds!r}")
        if node == "*" and not (isinstance(ds, str) and "{node}" in ds):
            raise t.err("datastream", f"a mapping for every node needs a string id with {{node}} in it, "
                                      f"e.g. \"{{node}}-{reading}\", got {ds!r}")
        if node != "*" and not check_node_id(node):
            raise t.err("node", f"must be a node id ({NODE_ID_RULE}) or \"*\", got {node!r}")
        t.finish()
        if (node, reading) in seen:
            what = f"reading {reading!r} of every node" if node == "*" else f"{node} {reading}"
            raise t.err("reading", f"{what} is mapped twice (also in [{seen[node, reading]}])")
        seen[node, reading] = where
        if ds in streams:
            raise t.err("datastream", f"{ds!r} is mapped twice (also in [{streams[ds]}])")
        streams[ds] = where
        out.append(StreamMapping(node=node, reading=reading, datastream=ds, where=where))
    return tuple(out)


def check_mappings(settings: Settings, keys: Collection[str]) -> None:
    # The [[sensorthings]] checks that need the keys file: a node must exist, and a node's
    # reading may be mapped once (by its own entry or by a template, not both).
    templates = {m.reading: m for m in settings.sensorthings if m.node == "*"}
    for m in settings.sensorthings:
        if m.node == "*":
            continue
        if m.node not in keys:
            raise ConfigError(f"[{m.where}] node: {m.node!r} is not in the keys file {settings.keys_file}")
        other = templates.get(m.reading)
        if other is not None:
            raise ConfigError(f"[{m.where}] reading: {m.node} {m.reading} is mapped twice (also by the template "
                              f"in [{other.where}])")


def _sensorthings_server(t: _Table, base: pathlib.Path) -> SensorThingsServer:
    url = t.get("url", str, required=True)
    u = urllib.parse.urlsplit(url)
    url = redact_url(url)
    modes = {"mqtt": ("mqtt", False, 1883), "mqtts": ("mqtt", True, 8883), "http": ("http", False, 80),
             "https": ("http", True, 443)}
    if u.scheme not in modes:
        raise t.err("url", f"must start with mqtt://, mqtts://, http:// or https://, got {url!r}")
    mode, tls, default_port = modes[u.scheme]
    port = _host_port(t, u, url, default_port)
    if mode == "mqtt" and u.path not in ("", "/"):
        raise t.err("url", f"an MQTT url has no path (the topic is v1.1/Datastreams(id)/Observations), got {url!r}")
    login = _endpoint(t, base, u, tls)
    version = t.get("version", str, "v1.1")
    if version not in ("v1.0", "v1.1"):
        raise t.err("version", f"must be \"v1.0\" or \"v1.1\", got {version!r}")
    server = SensorThingsServer(
        url=url, mode=mode, host=u.hostname, port=port, tls=tls, path=u.path.rstrip("/"), version=version, **login,
        client_id=t.get("client_id", str, ""),
        timeout_s=t.number("timeout_s", 10.0, 0.1, 600, float),
        retry_min_s=t.number("retry_min_s", 1.0, 0.01, 3600, float),
        retry_max_s=t.number("retry_max_s", 300.0, 0.01, 86400, float),
    )
    t.finish()
    return server


_URL_LOGIN = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*):[^\s/?#]*@")


def redact_url(text: str) -> str:
    # "mqtt://user:secret@host:1883" -> "mqtt://user:***@host:1883", in a url or in any text
    # (a log line): a password in a url never reaches a message, the log or the journal
    return _URL_LOGIN.sub(r"\1:***@", text)


def secrets_of(settings: Settings) -> tuple[str, ...]:
    # the secrets a config holds: passwords and the status page's token
    server, n = settings.sensorthings_server, settings.nats
    found = (settings.mqtt.password if settings.mqtt else None, server.password if server else None,
             settings.web_token, n.password if n else None, n.token if n else None)
    return tuple(s for s in found if s)


class RedactSecrets(logging.Filter):
    # On the gateway's log handler: every record is formatted, url logins masked and each of the
    # config's secrets (4+ characters; shorter ones would mask ordinary words) replaced by ***.
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if len(s) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = redact_url(text)
        for secret in self.secrets:
            masked = masked.replace(secret, "***")
        if masked != text:
            record.msg, record.args = masked, None
        return True


def private_files(settings: Settings) -> list[tuple[str, Any]]:
    # -> [(what, path)]: files only the gateway's user may read. The config file counts when
    # it holds a secret (a password or the web token); without one it may stay 0644.
    files: list[tuple[str, Any]] = [("[nodes] keys_file", settings.keys_file)]
    for where, ep in (("[mqtt] key", settings.mqtt), ("[sensorthings_server] key", settings.sensorthings_server)):
        if ep is not None and ep.key:
            files.append((where, ep.key))
    n = settings.nats
    files += [(f"[nats] {k}", getattr(n, k)) for k in ("key", "creds") if n is not None and getattr(n, k)]
    if secrets_of(settings):
        files.append(("the config file (it holds a password or token)", settings.path))
    return files


def check_private_files(settings: Settings) -> None:
    # A keys file, TLS private key or config with a password that group or others may open is
    # refused (ConfigError, exit 2 at start): such a key lets anyone on the box forge frames.
    for what, path in private_files(settings):
        check_private(path, what)


def check_private(path: str | os.PathLike[str], what: str) -> None:
    # one secret file: ConfigError when group or others may open it
    if os.name != "posix":
        return
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return  # a missing file is reported where it is read
    if mode & 0o077:
        raise ConfigError(f"{what} {path} is mode {mode:04o}, open to group or others; "
                          f"run chmod 600 {path} (owned by the gateway's user)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plaintext_warnings(settings: Settings) -> list[str]:
    # -> one line per secret that would cross the network in plain text
    out = []
    for where, ep in (("[mqtt]", settings.mqtt), ("[sensorthings_server]", settings.sensorthings_server)):
        if ep is not None and not ep.tls and ep.password and not _is_loopback(ep.host):
            scheme = ep.url.partition("://")[0]
            out.append(f"{where} url: the password goes in plain text over {scheme}:// to {ep.host}; "
                       f"use {scheme}s:// (TLS)")
    n = settings.nats
    if n is not None and (n.password or n.token or any(urllib.parse.urlsplit(u).password for u in n.servers)):
        for url in n.servers:
            u = urllib.parse.urlsplit(url)
            if u.scheme == "nats" and not (n.ca or n.cert) and not _is_loopback(u.hostname or ""):
                out.append(f"[nats] servers: the password or token goes in plain text over nats:// to "
                           f"{u.hostname}; use tls://")
    if settings.web_listen and settings.web_token:
        host = settings.web_listen.rpartition(":")[0]
        if not _is_loopback(host):
            out.append(f"[web] listen: the token and session cookie go in plain text over http:// on "
                       f"{settings.web_listen}; put an HTTPS reverse proxy in front (docs/gateway.md)")
    return out


def parse(data: Mapping[str, Any], path: str | os.PathLike[str] = "gateway.toml", role: str = "gateway") -> Settings:
    # role "relay": relay.toml (gateway/relay.py): [relay] in place of [gateway], [nats] and
    # [mqtt] both required, no [[ingest]]; every other table as for a gateway
    base = pathlib.Path(path).resolve().parent
    top = _Table(data, "top level")
    gw = _Table(top.get(role, dict, required=True), role)
    gw_id = gw.get("id", str, required=True)
    if not check_node_id(gw_id):
        raise gw.err("id", f"must be {NODE_ID_RULE}, got {gw_id!r}")
    data_dir = _path(base, gw.get("data_dir", str, required=True))
    log_level = gw.get("log_level", str, "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise gw.err("log_level", f"must be debug, info, warning or error, got {log_level!r}")
    queue_max = gw.number("queue_max", 10_000, 10, 1_000_000)
    gw.finish()

    relay = role == "relay"
    nats = top.get("nats", dict, required=relay)
    if nats is not None:
        nats = _nats(_Table(nats, "nats"), base)
    mqtt = top.get("mqtt", dict, required=nats is None or relay)  # a gateway with [nats] needs no [mqtt]
    if mqtt is not None:
        mqtt = _mqtt(_Table(mqtt, "mqtt"), base, gw_id)
    ingest = () if relay else _ingest(top.get("ingest", list, required=True), base)

    nodes = _Table(top.get("nodes", dict, required=True), "nodes")
    keys_file = _path(base, nodes.get("keys_file", str, required=True))
    nodes.finish()

    ob = _Table(top.get("outbox", dict, {}), "outbox")
    outbox = OutboxSettings(max_messages=ob.number("max_messages", 1_000_000, 1),
                            max_bytes=ob.number("max_bytes", 0, 0),
                            min_free_mb=ob.number("min_free_mb", 50, 0),
                            batch_max=ob.number("batch_max", 512, 1, 10_000),
                            linger_ms=ob.number("linger_ms", 20, 0, 1000))
    if outbox.max_bytes and outbox.max_bytes < 64 * 1024:
        raise ob.err("max_bytes", "must be 0 (no cap) or at least 65536")
    ob.finish()

    dl = _Table(top.get("downlink", dict, {}), "downlink")
    dl_max = dl.number("max_per_node", 16, 1, 1000)
    dl_attempts = dl.number("attempts", 5, 1, 100)
    dl.finish()

    agg = _Table(top.get("aggregate", dict, {}), "aggregate")
    agg_window = agg.number("window_s", 0.0, 0.0, 86400.0, float)
    agg.finish()

    web = _Table(top.get("web", dict, {}), "web")
    web_listen = web.get("listen", str)
    web_token = web.get("token", str)
    web_stale = web.get("stale_after_s", float)
    web_hosts = web.get("hosts", list, [])
    for h in web_hosts:
        if not isinstance(h, str) or not h or any(c in h for c in " :/[]@?#"):
            raise web.err("hosts", f"must be a list of host names (no port), got {h!r}")
    if web_listen is not None:
        from gateway.web.server import WebConfigError, parse_listen  # Flask loads only when a page is wanted

        try:
            parse_listen(web_listen, web_token)
        except WebConfigError as e:
            raise web.err("listen", str(e).removeprefix("web.listen: ")) from None
    web.finish()

    fc = _Table(top.get("forecast", dict, {}), "forecast")
    forecast = ForecastSettings(enabled=fc.get("enabled", bool, True),
                                lead_s=fc.number("lead_min", 15.0, 1.0, 24 * 60.0, float) * 60,
                                alarm_m=fc.number("alarm_m", 2.2, 0.01, 100.0, float),
                                min_confidence=fc.number("min_confidence", 0.4, 0.0, 1.0, float),
                                rain_gauges=_rain_gauges(fc))
    fc.finish()

    pb = _Table(top.get("publish", dict, {}), "publish")
    publish = PublishSettings(senml=pb.get("senml", bool, False), availability=pb.get("availability", bool, False),
                              availability_after_s=pb.number("availability_after_s", 900.0, 1.0, 7 * 86400.0, float),
                              homeassistant=pb.get("homeassistant", bool, False),
                              homeassistant_prefix=pb.get("homeassistant_prefix", str, "homeassistant"),
                              sensorthings_ids=pb.get("sensorthings_ids", bool, True))
    hp = publish.homeassistant_prefix
    if not hp or any(c in hp for c in "+#") or hp.startswith("/") or hp.endswith("/"):
        raise pb.err("homeassistant_prefix", f"must be a topic without + # or a leading/trailing /, got {hp!r}")
    pb.finish()

    st = _sensorthings(top.get("sensorthings", list, []))
    st_server = top.get("sensorthings_server", dict)
    if st_server is not None:
        st_server = _sensorthings_server(_Table(st_server, "sensorthings_server"), base)
        if not st:
            raise ConfigError("[sensorthings_server]: given, but no [[sensorthings]] mapping says what to send")
    top.finish()
    return Settings(path=str(path), gateway_id=gw_id, data_dir=data_dir, keys_file=keys_file, mqtt=mqtt,
                    ingest=ingest, nats=nats, outbox=outbox, queue_max=queue_max, log_level=log_level,
                    downlink_max_per_node=dl_max, downlink_attempts=dl_attempts, aggregate_window_s=agg_window,
                    sensorthings=st, sensorthings_server=st_server, web_listen=web_listen, web_token=web_token,
                    web_stale_after_s=web_stale, web_hosts=tuple(web_hosts), forecast=forecast, publish=publish)


def load(path: str | os.PathLike[str], role: str = "gateway") -> Settings:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    try:
        return parse(data, path, role)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
