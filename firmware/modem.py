# The radio modem: a board with an SX1262 (the Pico with Waveshare's Pico-LoRa-SX1262 HAT)
# between the air and the gateway's serial ingest. Each packet it hears goes up its USB
# console as a serial frame `7e | rssi | snr x 4 | packet` (COBS + CRC, SPEC.md 7 and 13.5);
# each frame `7e | packet` from the gateway goes out on the air, under the gateway's duty
# cycle (1 % of every hour in 868.0-868.6 MHz, firmware/lora_link.py DutyCycle): a packet the
# hour has no room for is dropped and counted (the gateway's next ACK is cumulative).
# main.py on the board: `from firmware import modem; modem.main()`.
from firmware.lora_link import DutyCycle
from protocol import cobs, compact


class Modem:
    def __init__(self, radio, uart, clock, permille=10):
        self.radio = radio  # micropython-lib's SX1262 (lora-sync): start_recv, poll_recv, send
        self.uart = uart  # firmware/links.py StdioUart-like: write, any, readinto
        self.clock = clock
        self.duty = DutyCycle(clock, permille)
        self.deframer = cobs.Deframer()
        self.buf = bytearray(64)
        self.counts = {"up": 0, "down": 0, "dropped": 0, "noise": 0}

    def step(self):
        # one round: a packet heard goes up; frames from the gateway go out. -> True if busy
        busy = False
        rx = self.radio.poll_recv()
        if isinstance(rx, bytearray):  # the driver's RxPacket: the payload, with rssi (dBm) and snr (dB x 4)
            self.uart.write(cobs.encode(compact.modem_uplink(rx, getattr(rx, "rssi", 0), getattr(rx, "snr", 0))))
            self.counts["up"] += 1
            busy = True
        for _ in range(16):  # bounded: a flood from the host cannot hold the radio
            if not self.uart.any():
                break
            n = self.uart.readinto(self.buf)
            if not n:
                break
            for kind, value in self.deframer.feed(self.buf[:n]):
                if kind == "frame" and value[:1] == b"\x7e" and len(value) > 1:
                    self.transmit(value[1:])
                    busy = True
                elif kind != "text":
                    self.counts["noise"] += 1
        return busy

    def transmit(self, air):
        t = (self.radio.get_time_on_air_us(len(air)) + 999) // 1000
        if not self.duty.allows(t):
            self.counts["dropped"] += 1
            return
        self.duty.spend(t)
        self.radio.send(air)  # the driver resumes the continuous receive afterwards
        self.counts["down"] += 1

    def run(self):
        self.radio.start_recv(continuous=True)
        while True:
            if not self.step():
                self.clock.sleep_ms(1)


def main(config_path="modem.json"):
    # the modem's radio settings from modem.json ({"freq_khz", "sf", "power_dbm"}, as a node's
    # LoRa link), the board's LoRa pins, the USB console as the line to the gateway
    import json

    from firmware import config
    from firmware.boards.rp2 import Board
    from firmware.links import StdioUart

    with open(config_path) as f:
        raw = json.load(f)
    link = config.validate({"node": "modem", "key": "00" * 16, "link": dict(raw, kind="lora")})["link"]
    board = Board()
    print("citynode modem: %d kHz SF%d" % (link["freq_khz"], link["sf"]))
    Modem(board.lora_modem(link), StdioUart(), board.clock, link["duty_permille"]).run()
