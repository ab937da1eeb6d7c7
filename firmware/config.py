# The node's config on flash (config.json, written by `citynode provision`): node id,
# key, link and interval, plus sensors, thresholds and buffer with defaults here.
# Validated on load with one clear reason per fault; the loop only sees checked values.
import json

from firmware import FirmwareError
from protocol.message import INTERVAL_MAX, KEY_MAX, KEY_MIN, THRESHOLD_MAX

CONFIG_NAME = "config.json"

DEFAULTS = {
    "interval_s": 300,  # reporting interval in normal mode
    "storm_interval_s": 30,  # sampling/reporting interval in storm mode
    # None: a frame every cycle (interval_s, storm_interval_s in storm mode). A number above
    # interval_s: report on change (a level move of delta_mm) and at least this often
    "heartbeat_s": None,
    "board": None,  # esp32, rp2, linux, rpi or sim; absent: the board it runs on (firmware/main.py)
    "link": {"kind": "uart"},
    # a list of sensor entries ({"kind": ..., its settings}), or the two slots of a map as
    # here, each merged over this; a sensor's settings and their defaults are its driver's
    # (firmware/sensors.py)
    "sensors": {"climate": {"kind": "bme280"}, "level": {"kind": "a02yyuw"}},
    "thresholds": {"alarm_mm": 2200, "storm_mm": 1200, "rise_mm_min": 20, "hysteresis_mm": 100},
    "buffer_slots": 512,
    "slot_bytes": 256,
    "watchdog_ms": 30000,
    "sleep": "light",  # light, deep or none
    "safe_after": 3,  # boots in a row that never reached a healthy cycle -> safe mode
    "key_version": 0,  # one up per re-key (citynode provision --force), named in frames (SPEC.md 4.5)
}

_INTS = {
    "interval_s": (1, INTERVAL_MAX), "storm_interval_s": (1, INTERVAL_MAX), "heartbeat_s": (1, 7 * 86400),
    "buffer_slots": (4, 4096), "slot_bytes": (64, 530), "watchdog_ms": (1000, 600000), "safe_after": (1, 100),
    "key_version": (0, 0x7FFFFFFF),
    # optional: the operator's command counter when this config was made (SPEC 6.7), and how
    # far a time command may move the clock (firmware/commands.py has the defaults)
    "cmd_floor": (0, 0xFFFFFFFF), "time_step_max_s": (1, 0xFFFFFFFF),
}
_THRESHOLDS = ("alarm_mm", "storm_mm", "rise_mm_min", "hysteresis_mm")


class ConfigError(FirmwareError):
    pass


def _merge(base, over):
    out = {}
    for k in base:
        out[k] = base[k]
    for k in over:
        if isinstance(out.get(k), dict) and isinstance(over[k], dict):
            out[k] = _merge(out[k], over[k])
        else:
            out[k] = over[k]
    return out


def _int(cfg, key, lo, hi, where="config"):
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError("%s: %s must be an integer %d..%d (got %r)" % (where, key, lo, hi, v))
    return v


def validate(raw, board=None):
    # raw dict (as read from flash) -> complete, checked config dict. Raises ConfigError.
    # board: the board it runs on, for a config that names none (firmware/main.py, citynode node)
    if not isinstance(raw, dict):
        raise ConfigError("config: not a JSON object")
    cfg = _merge(DEFAULTS, raw)
    if cfg["board"] is None:
        cfg["board"] = board
    node = cfg.get("node")
    from protocol.message import check_node_id

    if not check_node_id(node):
        raise ConfigError("config: node must be 1..32 of A-Z a-z 0-9 - : . _, first a letter or digit")
    try:
        key = bytes.fromhex(cfg.get("key") or "")
    except (TypeError, ValueError):
        raise ConfigError("config: key must be hex")
    if not KEY_MIN <= len(key) <= KEY_MAX:
        raise ConfigError("config: key must be %d..%d bytes" % (KEY_MIN, KEY_MAX))
    cfg["key_bytes"] = key
    ck = cfg.get("command_key")
    if ck is not None:  # without it the node takes no command
        try:
            ck = bytes.fromhex(ck)
        except (TypeError, ValueError):
            ck = key
        if not KEY_MIN <= len(ck) <= KEY_MAX or ck == key:
            raise ConfigError("config: command_key must be %d..%d bytes in hex, not the key" % (KEY_MIN, KEY_MAX))
        cfg["command_key_bytes"] = ck
    for k in _INTS:
        if k in cfg and (k != "heartbeat_s" or cfg[k] is not None):
            _int(cfg, k, _INTS[k][0], _INTS[k][1])
    if cfg["storm_interval_s"] > cfg["interval_s"]:
        raise ConfigError("config: storm_interval_s must not exceed interval_s")
    if cfg["sleep"] not in ("light", "deep", "none"):
        raise ConfigError("config: sleep must be light, deep or none")
    link = cfg["link"]
    if not isinstance(link, dict) or link.get("kind") not in ("uart", "udp", "lora"):
        raise ConfigError("config: link.kind must be uart, udp or lora")
    if link["kind"] == "lora":
        # EU868 g1 sub-band (868.0-868.6 MHz, 1 %, 25 mW ERP: ETSI EN 300 220); docs/lora.md
        for k, v in (("freq_khz", 868100), ("sf", 12), ("power_dbm", 14), ("duty_permille", 10)):
            link.setdefault(k, v)
        _int(link, "freq_khz", 868000, 868600, "config link")
        _int(link, "sf", 7, 12, "config link")
        _int(link, "power_dbm", -9, 14, "config link")
        _int(link, "duty_permille", 1, 10, "config link")
        # the LoRa module and so its chip, whose micropython-lib driver `citynode flash` installs
        from firmware.lora_radios import PICO_HAT, RADIOS

        # one of the board's modules (each names its board), the board's only one by default; a
        # config checked away from a board (the gateway's radio modem) may name any, the Pico's HAT by default
        board = cfg["board"]
        fits = [r for r in RADIOS if board is None or RADIOS[r]["board"] == board]
        if not fits:
            raise ConfigError("config: board %s has no LoRa radio; link.kind must be uart or udp (LoRa boards: %s)"
                              % (board, ", ".join(sorted(set(RADIOS[r]["board"] for r in RADIOS)))))
        radio = link.setdefault("radio", PICO_HAT if board is None else fits[0] if len(fits) == 1 else None)
        if radio not in fits:
            raise ConfigError("config: link.radio must name the board's LoRa module: %s (got %r)"
                              % (", ".join(fits), radio))
        chip = RADIOS[radio]["chip"]
        if link.setdefault("chip", chip) != chip:
            raise ConfigError("config: link.chip %r is not the %s's chip (%s)" % (link["chip"], radio, chip))
    if link["kind"] == "udp":
        if not isinstance(link.get("host"), str):
            raise ConfigError("config: link.host must be the gateway's address")
        _int(link, "port", 1, 65535, "config link")
        fallback = link.get("fallback") or []
        if not isinstance(fallback, list) or len(fallback) > 3:
            raise ConfigError("config: link.fallback must be a list of up to 3 gateways")
        for g in fallback:
            if not isinstance(g, dict) or not isinstance(g.get("host"), str):
                raise ConfigError("config: link.fallback entries need host and port")
            _int(g, "port", 1, 65535, "config link.fallback")
    th = cfg["thresholds"]
    for k in _THRESHOLDS:
        _int(th, k, 0, THRESHOLD_MAX, "config thresholds")
    cfg["sensors"] = _sensors(cfg)
    return cfg


def _sensors(cfg):
    # -> the sensors, each entry a copy checked against its driver's SETTINGS with their
    # defaults filled in (in the form given: a list, or the map of slots)
    from firmware import sensors as S

    given = cfg["sensors"]
    if isinstance(given, dict):
        out = {}
        for name in given:
            if name not in S.SLOTS:
                raise ConfigError("config: sensors.%s: no such sensor slot (%s)" % (name, ", ".join(S.SLOTS)))
            out[name] = given[name]
        todo = [("sensors." + k, k, S.AIR if k == "climate" else S.LEVEL) for k in S.SLOTS if given.get(k)]
    elif isinstance(given, list) and len(given) <= 8:
        out = {}
        for i in range(len(given)):
            out[i] = given[i]
        todo = [("sensors[%d]" % i, i, 0) for i in range(len(given))]
    else:
        raise ConfigError("config: sensors must be a list of up to 8 sensors, or a map of slots (%s)"
                          % ", ".join(S.SLOTS))
    seen = 0
    for where, at, need in todo:
        s = out[at]
        if not isinstance(s, dict):
            raise ConfigError("config: %s must be a map with a kind" % where)
        s = out[at] = dict(s)
        kind = s.get("kind")
        if kind not in S.KINDS:
            named = kinds(need) if need else S.KINDS
            raise ConfigError("config: %s.kind must be one of %s (got %r)" % (where, ", ".join(named), kind))
        try:
            drv = S.driver(kind)
        except ImportError:
            continue  # not on this board: checked where the config was made; the sampler logs it
        caps = drv.CAPS
        if caps & need != need:
            raise ConfigError("config: %s.kind must be one of %s (got %r)" % (where, ", ".join(kinds(need)), kind))
        for c in (S.LEVEL, S.AIR):
            if caps & c & seen:
                raise ConfigError("config: %s: a second %s sensor (a node has one)" % (
                    where, "level" if c == S.LEVEL else "climate"))
        if caps & S.AWAKE and cfg["sleep"] != "none":
            raise ConfigError('config: %s: a %s counts while the node waits: set "sleep": "none"' % (where, kind))
        seen |= caps
        _settings(s, drv.SETTINGS, "config " + where)
    return out if isinstance(given, dict) else [out[i] for i in range(len(given))]


def kinds(caps):
    # -> the sensor kinds whose driver declares all of caps (for a config error's one line)
    from firmware import sensors as S

    return [k for k in S.KINDS if S.driver(k).CAPS & caps == caps]


def _settings(s, schema, where):
    for k in schema:
        t, default, lo, hi = schema[k]
        v = s.get(k)
        if t in "IFBRS":  # upper case: required
            if v is None:
                raise ConfigError("%s: %s is required" % (where, k))
            t = t.lower()
        if v is None:
            if default is not None:
                s[k] = default
            elif k not in s:
                s[k] = None
            continue
        if t == "i":
            _int(s, k, lo, hi, where)
        elif t == "b" and not isinstance(v, bool):
            raise ConfigError("%s: %s must be true or false (got %r)" % (where, k, v))
        elif t == "f" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v <= hi):
            raise ConfigError("%s: %s must be a number in (%s, %s] (got %r)" % (where, k, lo, hi, v))
        elif t == "r" and not (isinstance(v, list) and len(v) == 2 and all(
                isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v) and v[0] < v[1]):
            raise ConfigError("%s: %s must be [low, high], integers %d..%d" % (where, k, lo, hi))
        elif t == "s" and not isinstance(v, str):
            raise ConfigError("%s: %s must be text (got %r)" % (where, k, v))


def load(path, board=None):
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError("%s: no config on flash; provision the node" % path)
    except ValueError:
        raise ConfigError("%s: config is not valid JSON" % path)
    return validate(raw, board)


def save(path, raw):
    # write-then-rename so a power cut leaves the old or the new file, never half of one
    validate(raw)
    import os

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(raw))
    os.rename(tmp, path)
