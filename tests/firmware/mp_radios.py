# Run by tests/firmware/test_lora_boards.py on the MicroPython unix port, with the simulated
# machine of tests/support/mp_radio and micropython-lib's drivers as `citynode flash` installs
# them for one chip: opens each named LoRa module through firmware/lora_radios.py and prints
# what the driver did on the bus, one JSON line per module.
import json
import sys

import machine

from firmware import lora_radios as radios

link = {"freq_khz": 868100, "sf": 10, "power_dbm": 14}
for name in sys.argv[1:]:
    machine.reset_log(radios.RADIOS[name]["chip"])
    try:
        m = radios.open_modem(name, link)
        got = {"name": name, "class": type(m).__name__, "spi": machine.SPI_ARGS,
               "pins": {str(k): v for k, v in machine.PINS.items()}, "commands": machine.COMMANDS,
               "regs": bytes(machine.REGS).hex(), "toa_us": m.get_time_on_air_us(43)}
    except Exception as e:  # noqa: BLE001 - the test reads it
        got = {"name": name, "error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(got))
