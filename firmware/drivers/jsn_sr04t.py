# JSN-SR04T in mode 2 (a resistor on its R27 pads): the A02YYUW's 0xFF H L SUM frames over
# UART (firmware/drivers/a02yyuw.py), but converted at a fixed 343 m/s, so the node rescales
# its distance to the speed of sound of the measured air by default.
from firmware import level
from firmware.drivers.a02yyuw import Sensor  # noqa: F401 - the same sensor, other defaults
from firmware.sensors import LEVEL

SETTINGS = level.settings(level.FILTER, level.DISTANCE, {"compensate": ("b", True, 0, 0)})
CAPS = LEVEL
DEPTH = "mount_mm"
