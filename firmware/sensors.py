# The sensor contract, and the sensor kinds a node config may name. A sensor is one driver
# module, firmware/drivers/<kind>.py, named by its config kind, with:
#
#   SETTINGS  {name: (type, default, low, high)}: every setting it takes, with its default
#             (the one place that default lives). type: "i" integer low..high, "f" number
#             in (low, high], "b" true/false, "r" [low, high] of integers in low..high, "s"
#             text; in upper case: required. A default of None: optional, None unless the
#             config gives it.
#             firmware/config.py checks each entry against it and fills the defaults in.
#   CAPS      what it declares (bits below): LEVEL, it gives the level reading the storm
#             policy takes (at most one per node; such a driver also names DEPTH, the
#             setting that bounds the level thresholds); AIR, it gives the air temperature
#             and pressure that other sensors correct for (read first, at most one); AWAKE,
#             it counts between readings, so the node must not sleep (config "sleep": "none").
#   Sensor(board, settings)  made when the node starts, touching no hardware (Base below
#             holds board, s and part); then
#       part      None until open() succeeded (the driver of the part itself)
#       open()    sets the part up from the board (its buses and pins); raises OSError,
#                 ValueError, ... when it is missing: logged, tried again every 10 minutes
#       read(ctx, out)  one reading a cycle: its SenML records appended to the list out
#                 (none allocated for them) -> the quality of its first record
#                 ([taken, rejected, status]), or None when fine; with no part: the fault
#                 reading. ctx is the sampler: an AIR sensor sets ctx.temp_c and
#                 ctx.pressure_pa, the others read them.
#                 A LEVEL sensor keeps its last good level in `mm` (mm above the invert).
#
# A new sensor is its driver module, its kind in KINDS below, and a simulated part in
# firmware/sim/devices.py (docs/architecture.md). Drivers are imported only when a config
# names them (RAM); `citynode flash` puts every one of KINDS on a board.
import struct

LEVEL = 1
AIR = 2
AWAKE = 4

KINDS = ("bme280", "bme280_adafruit", "a02yyuw", "jsn_sr04t", "hcsr04", "hydrostatic", "tipping_bucket")
SLOTS = ("climate", "level")  # a config's map form of sensors: its slots, in the order they are read


class Base:
    # what every sensor holds: the board, its checked settings, its part once open
    def __init__(self, board, s):
        self.board = board
        self.s = s
        self.part = None


def driver(kind):
    # config kind -> its driver module; ValueError for a kind that is none of KINDS
    if kind not in KINDS:
        raise ValueError("no sensor kind %r" % (kind,))
    return __import__("firmware.drivers." + kind, None, None, (kind,))


def sensor_list(cfg):
    # a checked config (firmware/config.py) -> its sensor entries, in order (the map form:
    # climate, then level)
    s = cfg["sensors"]
    if isinstance(s, dict):
        return [s[k] for k in SLOTS if s.get(k)]
    return s


def f32(x):
    # a reading quantised as SPEC section 3 says: binary32
    return struct.unpack("f", struct.pack("f", x))[0]


def f16(x):
    # binary16
    return struct.unpack("e", struct.pack("e", x))[0]
