# Device entry (main.py on the board imports this): load the config from flash, pick the
# board, and run the node forever. A bad or missing config is reported on the console
# and retried, never a crash loop; the node's own loop handles everything after that.
# Anything else that escapes (a full filesystem, MemoryError in Node() or start(), a
# board that will not come up) is logged, and the board resets after RESTART_S: a node
# left at the REPL stays silent until someone power-cycles it.
import sys
import time

from firmware import FirmwareError, load_config
from firmware.node import Node

BOARDS = {"esp32": "firmware.boards.esp32", "rp2": "firmware.boards.rp2", "linux": "firmware.boards.linux"}


def guess_board():
    p = sys.platform
    if p == "esp32":
        return "esp32"
    if p == "rp2":
        return "rp2"
    return "linux"


def make_board(name, root=""):
    module = BOARDS.get(name)
    if module is None:
        from firmware.config import ConfigError

        raise ConfigError("config: board %r has no entry point here (esp32, rp2, linux)" % name)
    mod = __import__(module, None, None, ["Board"])
    return mod.Board(root) if root else mod.Board()


RESTART_S = 30


def main(root=""):
    board = node = None
    try:
        while True:
            try:
                cfg = load_config(root, guess_board())  # a config that names no board: the one it runs on
                board = make_board(cfg["board"], root)
                break
            except FirmwareError as e:  # config.ConfigError: a config that does not pass, or no such board
                print("citynode: %s; retrying in 60 s" % e)
                time.sleep(60)
        node = Node(board, cfg)
        node.start()
        node.run()  # returns only through a reset
    except Exception as e:  # noqa: BLE001 - KeyboardInterrupt (a technician) still reaches the REPL
        restart(e, board, node, root, RESTART_S)


def restart(e, board=None, node=None, root="", wait_s=30):
    # log, wait (a technician can read it and press Ctrl-C), reset; the next boot reports
    # its reset cause as "start_failed"
    try:
        print("citynode: start failed: %r; reset in %d s" % (e, wait_s))
        if hasattr(sys, "print_exception"):
            sys.print_exception(e)  # pyright: ignore[reportAttributeAccessIssue]
    except Exception:  # noqa: BLE001, S110 - even the console may be gone
        pass
    try:
        from firmware.state import State

        st = State(board.path("state.json"), board.open) if board is not None else State(
            (root + "/" if root else "") + "state.json")
        if st.load().get("boot"):  # never write a state it could not read (the boot counter)
            st.save(note="start_failed")
    except Exception:  # noqa: BLE001, S110 - a full or broken filesystem: reset all the same
        pass
    wdt = getattr(node, "wdt", None)
    for _ in range(wait_s):
        if wdt is not None:
            wdt.feed()  # armed before the crash: the wait must not end in a watchdog reset
        time.sleep(1)
    if board is not None:
        board.reset()
    import machine  # no board yet

    machine.reset()


if __name__ == "__main__" or sys.platform in ("esp32", "rp2"):
    main()
