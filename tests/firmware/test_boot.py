# The device entry (firmware/main.py) and the config it loads: the board is detected when
# the config names none, a sensor kind in the wrong slot is refused with one line, and a
# crash before the node's loop runs ends in a reset, never at the REPL.
import json
import sys

import pytest

from firmware import config
from firmware import main as entry

KEY = "00" * 16


class Stop(BaseException):
    # ends main() in a test (BaseException: main's guard must not swallow it)
    pass


def write_config(tmp_path, raw):
    (tmp_path / config.CONFIG_NAME).write_text(json.dumps(raw))


@pytest.mark.parametrize("platform,board", [("esp32", "esp32"), ("rp2", "rp2"), ("linux", "linux")])
def test_a_config_without_board_runs_the_board_it_is_on(tmp_path, monkeypatch, platform, board):
    # on main the default "sim" won: an ESP32 printed "no entry point" every 60 s forever
    write_config(tmp_path, {"node": "sew-1", "key": KEY})
    picked = []

    def make_board(name, root=""):
        picked.append(name)
        raise Stop()

    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(entry, "make_board", make_board)
    with pytest.raises(Stop):
        entry.main(str(tmp_path))
    assert picked == [board]
    assert config.validate({"node": "n", "key": KEY})["board"] is None


def test_a_named_board_wins_and_an_unknown_one_is_one_line(tmp_path, monkeypatch):
    assert config.validate({"node": "n", "key": KEY, "board": "rp2"})["board"] == "rp2"
    with pytest.raises(config.ConfigError) as e:
        entry.make_board("esp8266")
    assert "\n" not in str(e.value) and "board 'esp8266' has no entry point here" in str(e.value)


@pytest.mark.parametrize("slot,kind,words", [
    ("level", "bme280", "sensors.level.kind must be one of a02yyuw, jsn_sr04t, hcsr04, hydrostatic (got 'bme280')"),
    ("climate", "hcsr04", "sensors.climate.kind must be one of bme280, bme280_adafruit (got 'hcsr04')"),
    ("rain", "bme280", "sensors.rain: no such sensor slot (climate, level)"),
])
def test_a_sensor_in_the_wrong_slot_is_refused_with_one_line(slot, kind, words):
    # on main a BME280 as the level sensor passed validation and the level was silently None
    with pytest.raises(config.ConfigError) as e:
        config.validate({"node": "n", "key": KEY, "sensors": {slot: {"kind": kind}}})
    assert str(e.value) == "config: " + words


def test_flash_gives_a_config_without_board_the_device_entry():
    # on main such a config got the sim board's entry (tools/rig/sim_main.py) on a real board
    from tools.upload import DEFAULT_MAIN, build_bundle

    raw = {"node": "n", "key": KEY}
    config.validate(raw)
    files = dict(build_bundle(raw))
    assert files["main.py"].decode() == DEFAULT_MAIN
    # it gets both MicroPython ports' board modules, and no simulator
    assert "lib/firmware/boards/esp32.mpy" in files and "lib/firmware/boards/rp2.mpy" in files
    assert not [p for p in files if "/sim/" in p]


def test_flash_accepts_a_config_without_board_on_either_port():
    # on main flash took a board-less config for the sim board and refused every real board
    from tests.tools.test_flash import AnsweringBoard
    from tools.flash import FlashError, check_board

    for answer in (b"esp32 -\r\n", b"rp2 -\r\n"):
        assert check_board(AnsweringBoard(answer), {"node": "n", "key": KEY}, "/dev/ttyACM0") is False
    with pytest.raises(FlashError, match="wrong board"):  # a Linux MicroPython is no node board
        check_board(AnsweringBoard(b"linux -\r\n"), {"node": "n", "key": KEY}, "/dev/ttyACM0")


# ---------------------------------------------------------------- crashes before the loop

class BoardThatResets:
    # a board whose reset() ends the test (machine.reset() never returns on a port)
    name = "fake"

    def __init__(self, root, fail_writes=False):
        from firmware.clock import Clock

        self.root = str(root)
        self.clock = Clock()
        self.fail_writes = fail_writes
        self.resets = 0

    def path(self, name):
        return self.root + "/" + name

    def open(self, path, mode="r"):
        if self.fail_writes and "w" in mode:
            raise OSError(28, "No space left on device")  # ENOSPC, as VfsLfs2 raises it
        return open(path, mode)

    def reset(self):
        self.resets += 1
        raise Stop()

    def log(self, text):
        print(text)


@pytest.fixture
def no_wait(monkeypatch):
    import time

    waited = []
    monkeypatch.setattr(time, "sleep", lambda s: waited.append(s))
    return waited


def run_main(tmp_path, monkeypatch, board, node_cls=None):
    write_config(tmp_path, {"node": "sew-1", "key": KEY, "board": "esp32"})
    monkeypatch.setattr(entry, "make_board", lambda name, root="": board)
    if node_cls is not None:
        monkeypatch.setattr(entry, "Node", node_cls)
    with pytest.raises(Stop):
        entry.main(str(tmp_path))


def test_memory_error_in_node_logs_waits_and_resets(tmp_path, monkeypatch, no_wait, capsys):
    # on main the MemoryError left the board at the REPL until someone power-cycled it
    class Node:
        def __init__(self, board, cfg):
            raise MemoryError("memory allocation failed, allocating 752 bytes")

    (tmp_path / "state.json").write_text(json.dumps({"boot": 41, "unhealthy": 0}))
    board = BoardThatResets(tmp_path)
    run_main(tmp_path, monkeypatch, board, Node)
    assert board.resets == 1 and sum(no_wait) == entry.RESTART_S
    assert "citynode: start failed: MemoryError" in capsys.readouterr().out
    st = json.loads((tmp_path / "state.json").read_text())
    assert st == {"boot": 41, "unhealthy": 0, "note": "start_failed"}  # the next boot says why


def test_full_filesystem_in_start_resets(tmp_path, monkeypatch, no_wait, capsys):
    board = BoardThatResets(tmp_path, fail_writes=True)
    board.uplink = lambda cfg: None
    board.watchdog = lambda ms: None
    board.reset_cause = lambda: "power_on"
    run_main(tmp_path, monkeypatch, board)  # the real Node: start() cannot save the boot counter
    assert board.resets == 1 and "No space left" in capsys.readouterr().out


def test_a_crash_after_the_watchdog_is_armed_feeds_it_while_waiting(tmp_path, monkeypatch, no_wait):
    fed = []

    class Wdt:
        def feed(self):
            fed.append(1)

    class Node:
        def __init__(self, board, cfg):
            self.wdt = None

        def start(self):
            self.wdt = Wdt()

        def run(self):
            raise OSError(5)

    board = BoardThatResets(tmp_path)
    run_main(tmp_path, monkeypatch, board, Node)
    assert board.resets == 1 and len(fed) == entry.RESTART_S  # a feed before every 1 s wait


def test_dns_with_wifi_down_is_counted_and_retried(monkeypatch):
    # on main UdpLink() raised in Node(): a gateway host name with Wi-Fi down stopped the board
    import socket

    from firmware.links import UdpLink
    from firmware.sim.world import VirtualClock

    gateway = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gateway.bind(("127.0.0.1", 0))
    gateway.settimeout(5)
    node_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    node_sock.bind(("127.0.0.1", 0))
    real = socket.getaddrinfo
    wifi = [False]

    def getaddrinfo(host, port, *a):
        if host == "gw.city.example":
            if not wifi[0]:
                # the ports raise OSError with a negative number (extmod/modlwip.c lwip_getaddrinfo)
                raise OSError(-6)
            host = "127.0.0.1"
        return real(host, port, *a)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        clock = VirtualClock()
        link = UdpLink("gw.city.example", gateway.getsockname()[1], sock=node_sock, clock=clock)
        assert link.addr is None and link.counts["dns"] == 1
        assert link.send(b"frame 1") is False and link.counts["dns"] == 1  # the next lookup waits 5 s
        clock.sleep_ms(5000)
        assert link.send(b"frame 1") is False and link.counts["dns"] == 2
        wifi[0] = True
        assert link.send(b"frame 2") is False  # now 10 s
        clock.sleep_ms(10000)
        assert link.send(b"frame 2") is True
        assert gateway.recv(100) == b"frame 2"
    finally:
        gateway.close()
        node_sock.close()


@pytest.mark.micropython
def test_the_guard_runs_on_the_micropython_vm(tmp_path):
    from tests.support import mpvm

    (tmp_path / "config.json").write_text(json.dumps({"node": "sew-1", "key": KEY}))
    script = (
        "import sys, time\n"
        "class Machine:\n"
        "    def reset(self):\n"
        "        print('RESET')\n"
        "        raise SystemExit(0)\n"
        "sys.modules['machine'] = Machine()\n"
        "from firmware import main as entry\n"
        "entry.RESTART_S = 1\n"
        "def make_board(name, root=''):\n"
        "    raise MemoryError('memory allocation failed')\n"
        "entry.make_board = make_board\n"
        "entry.main(%r)\n" % str(tmp_path)
    )
    # from source, compiled on the 64-bit VM (tests/support/mpvm.py: the heap is room, no board's budget)
    p = mpvm.run(script)
    assert "citynode: start failed: MemoryError('memory allocation failed'" in p.stdout, p.stdout
    assert p.stdout.rstrip().endswith("RESET"), p.stdout
