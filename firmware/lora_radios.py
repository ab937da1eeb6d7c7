# LoRa radio modules: which board carries it, which chip, and how the board wires it, one entry
# per module. A node's config names its module (link "radio"; firmware/config.py checks that it
# is one of its board's and puts the chip beside it, so `citynode flash` installs
# micropython-lib's driver for that chip: lora-sx126x or lora-sx127x; a board no module names
# has no LoRa link). Pins as the vendors document them:
# - "pico-lora-sx1262": Waveshare Pico-LoRa-SX1262 HAT on a Raspberry Pi Pico, Waveshare wiki
#   "Pico-LoRa-SX1262" pinout: SPI1 SCK GP10, MOSI GP11, MISO GP12, NSS GP3, BUSY GP2, DIO1 GP20,
#   RESET GP15.
# - "heltec-lora32-v3": Heltec WiFi LoRa 32 V3 (ESP32-S3 + SX1262), Heltec's schematic
#   HTIT-WB32LA(F)_V3.1 and pin map: NSS GPIO8, SCK GPIO9, MOSI GPIO10, MISO GPIO11, RESET
#   GPIO12, BUSY GPIO13, DIO1 GPIO14; the SX1262's 32 MHz TCXO is powered from its DIO3 at
#   1.8 V, and DIO2 drives the RF switch.
# - "lilygo-t3-v1.6.1": LILYGO TTGO LoRa32 T3 V1.6.1 (ESP32 + SX1276), LILYGO's LilyGo-LoRa-Series
#   utilities.h (T3_V1_6): SCK GPIO5, MISO GPIO19, MOSI GPIO27, NSS GPIO18, RESET GPIO23, DIO0
#   GPIO26, DIO1 GPIO33; the antenna is on the SX1276's PA_BOOST pin.
RADIOS = {
    "pico-lora-sx1262": {"board": "rp2", "chip": "sx1262", "spi": 1, "sck": 10, "mosi": 11, "miso": 12, "cs": 3,
                         "busy": 2, "dio1": 20, "reset": 15},
    "heltec-lora32-v3": {"board": "esp32", "chip": "sx1262", "spi": 1, "sck": 9, "mosi": 10, "miso": 11, "cs": 8,
                         "busy": 13, "dio1": 14, "reset": 12, "tcxo_mv": 1800},
    "lilygo-t3-v1.6.1": {"board": "esp32", "chip": "sx1276", "spi": 1, "sck": 5, "mosi": 27, "miso": 19, "cs": 18,
                         "dio0": 26, "dio1": 33, "reset": 23, "tx_ant": "PA_BOOST"},
}
PICO_HAT = "pico-lora-sx1262"  # the module of a config checked away from a board (the gateway's modem)


def _sx126x(r, spi, pin, lora_cfg):
    from lora import SX1262  # pyright: ignore[reportMissingImports]

    return SX1262(spi=spi, cs=pin(r["cs"]), busy=pin(r["busy"]), dio1=pin(r["dio1"]),
                  dio3_tcxo_millivolts=r.get("tcxo_mv"), reset=pin(r["reset"]), lora_cfg=lora_cfg)


def _sx127x(r, spi, pin, lora_cfg):
    from lora import SX1276  # pyright: ignore[reportMissingImports]

    lora_cfg["tx_ant"] = r.get("tx_ant", "PA_BOOST")
    return SX1276(spi=spi, cs=pin(r["cs"]), dio0=pin(r["dio0"]), dio1=pin(r["dio1"]), reset=pin(r["reset"]),
                  lora_cfg=lora_cfg)


DRIVERS = {"sx1262": _sx126x, "sx1276": _sx127x}  # chip -> its micropython-lib modem, wired


def open_modem(name, link):
    # the module `name` (a key of RADIOS) with the link's frequency, SF and power: micropython-lib's
    # synchronous modem (send, recv, get_time_on_air_us), which `citynode flash` installed in /lib/lora
    import machine

    r = RADIOS[name]
    spi = machine.SPI(r["spi"], baudrate=2000000, sck=machine.Pin(r["sck"]), mosi=machine.Pin(r["mosi"]),
                      miso=machine.Pin(r["miso"]))
    lora_cfg = {"freq_khz": link["freq_khz"], "sf": link["sf"], "bw": "125", "coding_rate": 5, "preamble_len": 8,
                "output_power": link["power_dbm"]}
    return DRIVERS[r["chip"]](r, spi, machine.Pin, lora_cfg)
