# A simulated `machine` for the MicroPython unix port (which has no Pin or SPI), with the LoRa
# chip on its SPI bus behaving as its datasheet says, as far as micropython-lib's drivers use
# it when they open the modem (tests/firmware/test_lora_boards.py):
# - SX1262 (Semtech SX1261/2 datasheet, rev 2.1): a command per transfer, the opcode first; the
#   status byte (13.5.1: chip mode in bits 6:4, command status in bits 3:1) follows the opcode
#   of the Get* commands, the result after it; after a reset the chip is in STDBY_RC (mode 2)
#   and BUSY is low once it is ready; no device errors (GetDeviceErrors 0x17 gives 0).
# - SX1276 (Semtech SX1276/77/78/79 datasheet, rev 7): registers over SPI, the address byte
#   first with bit 7 set for a write (4.3 "SPI interface"), bursts to consecutive addresses;
#   RegVersion 0x42 reads 0x12.
# It records what the driver did: PINS (id -> the modes and values it was given), SPI_ARGS (the
# bus and its pins), COMMANDS (SX1262 transfers, hex) and REGS (the SX1276 register file).
PINS = {}
SPI_ARGS = []
COMMANDS = []
REGS = bytearray(128)
CHIP = ["sx1262"]


def reset_log(chip):
    PINS.clear()
    SPI_ARGS.clear()
    COMMANDS.clear()
    for i in range(128):
        REGS[i] = 0
    REGS[0x42] = 0x12  # RegVersion
    REGS[0x01] = 0x09  # RegOpMode after reset: FSK/OOK, standby (datasheet table 41)
    CHIP[0] = chip


class Pin:
    IN = 0
    OUT = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, value=None):
        self.id = id
        self.v = 0
        self.log = PINS.setdefault(id, [])
        if mode != -1:
            self.init(mode, value=value)

    def init(self, mode=-1, value=None):
        self.log.append("out" if mode == Pin.OUT else "in")
        if value is not None:
            self(value)

    def __call__(self, value=None):
        if value is None:
            return self.v  # BUSY: low, the chip is ready (DS 8.3.1)
        self.v = value
        return None

    def value(self, value=None):
        return self(value)

    def irq(self, handler=None, trigger=IRQ_RISING):
        self.log.append("irq")


_STATUS_CMDS = (0xC0, 0x12, 0x17, 0x13, 0x14, 0x15, 0x10)  # GetStatus, GetIrqStatus, GetDeviceErrors, ...
_STDBY_RC = (2 << 4) | (1 << 1)  # chip mode STDBY_RC, command status 1 (DS 13.5.1)


class SPI:
    def __init__(self, id, baudrate=1000000, sck=None, mosi=None, miso=None, **kw):
        SPI_ARGS.append([id, baudrate, sck.id if sck else None, mosi.id if mosi else None,
                         miso.id if miso else None])
        self.addr = None  # an SX1276 burst's address, set by a one-byte transfer

    # SX1262: one command per transfer
    def write_readinto(self, wbuf, rbuf):
        if CHIP[0] == "sx1276":
            a = wbuf[0] & 0x7F
            if wbuf[0] & 0x80:
                REGS[a] = wbuf[1]
            else:
                rbuf[1] = REGS[a]
            rbuf[0] = 0
            return
        op = wbuf[0]
        COMMANDS.append(bytes(wbuf).hex())
        if op in _STATUS_CMDS:
            rbuf[1] = _STDBY_RC
            for i in range(2, len(rbuf)):
                rbuf[i] = 0

    def write(self, buf):
        if CHIP[0] != "sx1276":
            COMMANDS.append("w" + bytes(buf).hex())
            return
        if self.addr is None and len(buf) == 1:
            self.addr = buf[0] & 0x7F  # a burst follows
            return
        if self.addr is None:
            a, data = buf[0] & 0x7F, buf[1:]
        else:
            a, data = self.addr, buf
            self.addr = None
        for i in range(len(data)):
            REGS[(a + i) & 0x7F] = data[i]

    def readinto(self, buf, write_byte=0):
        if CHIP[0] != "sx1276":
            for i in range(len(buf)):
                buf[i] = 0
            return
        if self.addr is None and len(buf) == 1:
            self.addr = write_byte & 0x7F
            buf[0] = 0
            return
        for i in range(len(buf)):
            buf[i] = REGS[(self.addr + i) & 0x7F]
        self.addr = None
