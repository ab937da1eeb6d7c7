# main.py of a sim board on the virtual rig (uploaded by `citynode flash` for board "sim";
# runs on MicroPython): the real firmware on the sim board in real time, with the console
# line as its UART (COBS frames out, ACKs and commands in, console text between frames).
from firmware import config
from firmware.clock import Clock
from firmware.links import UartLink
from firmware.sim.board import Runner, SimBoard, StdioUart


def main() -> None:
    uart = StdioUart()

    def console(text: str) -> None:
        uart.write((text + "\n").encode())

    board = SimBoard(".", clock=Clock(), log=console)
    try:
        cfg = config.load(board.path(config.CONFIG_NAME))
    except config.ConfigError as e:
        console("config error: %s" % e)
        return
    console("config: node %s board %s link %s interval %d s" % (
        cfg["node"], cfg["board"], cfg["link"]["kind"], cfg["interval_s"]))
    Runner(board, cfg, UartLink(uart, board.clock)).run(1 << 62)


main()
