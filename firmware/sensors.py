# Sensor registry: config kind -> factory(board, settings) -> driver. A new sensor is one
# driver file and one entry here. Drivers are imported only when configured (RAM).


def _bme280(board, s):
    from firmware.drivers.bme280 import BME280

    o = s.get("oversample", 1)
    return BME280(board.i2c(s), s.get("address", 0x76), oversample_t=o, oversample_p=o, oversample_h=o,
                  iir=s.get("iir", 0), clock=board.clock)


def _uart_ultrasonic(board, s):
    from firmware.drivers.a02yyuw import A02YYUW

    # the A02YYUW compensates for the air temperature itself (correcting again is ~50 mm off at
    # 3 m for 10 °C); the JSN-SR04T reports at a fixed speed of sound: per-sensor "compensate"
    return A02YYUW(board.sensor_uart(s), min_mm=s.get("min_mm", 30), max_mm=s.get("max_mm", 4500),
                   clock=board.clock, compensate=s.get("compensate", s["kind"] != "a02yyuw"))


def _echo(board, s):
    from firmware.drivers.hcsr04 import from_config

    return from_config(board, s)


def _hydrostatic(board, s):
    from firmware.drivers.hydrostatic import from_config

    return from_config(board, s)


def _bme280_adafruit(board, s):
    return board.bme280_adafruit(s)  # Linux boards only (Blinka)


CLIMATE = {
    "bme280": _bme280,
    "bme280_adafruit": _bme280_adafruit,
}
LEVEL = {
    "a02yyuw": _uart_ultrasonic,
    "jsn_sr04t": _uart_ultrasonic,  # mode 2 speaks the same 0xFF H L SUM frames
    "hcsr04": _echo,
    "hydrostatic": _hydrostatic,
}
DISTANCE_KINDS = ("a02yyuw", "jsn_sr04t", "hcsr04")  # level = mount_mm - distance


def build_climate(board, settings):
    # -> driver with read() -> (temperature_C, pressure_Pa, humidity_RH), or None with the reason logged
    try:
        return CLIMATE[settings["kind"]](board, settings)
    except (OSError, ValueError, AttributeError, ImportError, KeyError) as e:
        board.log("sensor %s: %s" % (settings["kind"], e))
        return None


def build(board, settings):
    # level sensor -> driver with read_mm(speed_mm_s) and reason, or None with the reason logged
    # (a missing sensor is a fault, not a crash)
    if settings["kind"] in CLIMATE:
        return None
    try:
        return LEVEL[settings["kind"]](board, settings)
    except (OSError, ValueError, AttributeError, ImportError, KeyError) as e:
        board.log("sensor %s: %s" % (settings["kind"], e))
        return None
