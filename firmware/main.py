# Device entry (main.py on the board imports this): load the config from flash, pick the
# board, and run the node forever. A bad or missing config is reported on the console
# and retried, never a crash loop; the node's own loop handles everything after that.
import sys

from firmware import config
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
        raise config.ConfigError("config: board %r has no entry point here (esp32, rp2, linux)" % name)
    mod = __import__(module, None, None, ["Board"])
    return mod.Board(root) if root else mod.Board()


def main(root=""):
    import time

    path = (root + "/" if root else "") + config.CONFIG_NAME
    while True:
        try:
            cfg = config.load(path)
            board = make_board(cfg.get("board") or guess_board(), root)
            break
        except config.ConfigError as e:
            print("citynode: %s; retrying in 60 s" % e)
            time.sleep(60)
    node = Node(board, cfg)
    node.start()
    node.run()  # returns only through a reset


if __name__ == "__main__" or sys.platform in ("esp32", "rp2"):
    main()
