# The Raspberry Pi node's own path: `citynode provision --board rpi` makes its config,
# `citynode node` runs it on CPython with the Pi board (firmware/boards/rpi.py) under
# systemd (deploy/citynode-node.service), and `citynode flash` refuses it. End to end: the
# node as a real process sends frames over UDP to a real gateway on loopback, says READY=1
# and feeds the watchdog over a real sd_notify socket, stops on SIGTERM and comes back as a
# new boot; the operator's signed reboot command (citynode command over MQTT) ends it with
# exit 3, and the next start is the next boot with reset cause "command". The Pi's sensors
# are absent here: their drivers fail to open as on a Pi without them (one line each), and
# the frames carry that status.
import configparser
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from gateway import config as gwconfig
from gateway.daemon import Gateway
from gateway.keys import load_keys
from tests.gateway.conftest import write_config
from tests.support.broker import free_port
from tools import cli

REPO = pathlib.Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "citynode-node.service"
GATEWAY_UNIT = REPO / "deploy" / "citynode-gateway.service"
NODE = "pi-01"


def provision(tmp_path, *extra):
    code = cli.main(["provision", "--node", NODE, "--board", "rpi", "--out", str(tmp_path / "pi"), "--keys",
                     str(tmp_path / "keys.toml"), *extra])
    assert code == 0
    return tmp_path / "pi"


def node_cmd(folder, *extra):
    return [sys.executable, "-m", "tools.cli", "node", "--dir", str(folder), *extra]


def test_provision_makes_a_pi_config_that_flash_refuses(tmp_path, capsys):
    folder = provision(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["board"] == "rpi" and cfg["sensors"]["climate"]["kind"] == "bme280_adafruit"
    code = cli.main(["flash", "--port", "/dev/ttyUSB0", "--node-dir", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "a Raspberry Pi node is not flashed" in err[0], err


def test_check_config_says_ok_or_one_line_with_exit_2(tmp_path, capsys):
    folder = provision(tmp_path, "--link", "udp", "--gateway", "127.0.0.1:5683")
    assert cli.main(["node", "--dir", str(folder), "--check-config"]) == 0
    assert "ok (node pi-01, board rpi, link udp 127.0.0.1:5683, every 300 s)" in capsys.readouterr().out
    cfg = json.loads((folder / "config.json").read_text())
    cases = [("is mode 0644, open to group or others; run chmod 600", None),
             ("is not a Raspberry Pi node; that board runs MicroPython", dict(cfg, board="esp32")),
             ("provision the Raspberry Pi with --board rpi", dict(cfg, board="linux")),
             ("interval_s must be an integer", dict(cfg, interval_s=0))]
    for want, changed in cases:
        if changed is None:
            os.chmod(folder / "config.json", 0o644)
        else:
            (folder / "config.json").write_text(json.dumps(changed))
        code = cli.main(["node", "--dir", str(folder), "--check-config"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and want in err[0], (want, err)
        os.chmod(folder / "config.json", 0o600)
    assert cli.main(["node", "--dir", str(tmp_path / "none"), "--check-config"]) == 2
    assert "no node config" in capsys.readouterr().err


def test_a_lora_link_is_refused_in_one_line_at_check_and_at_start(tmp_path, capsys):
    # a Pi has no LoRa radio (firmware/lora_radios.py names none for it): on main a hand-written
    # "kind": "lora" passed the check ("ok ... link lora /dev/ttyUSB0") and the node ran a UART
    # link at /dev/ttyUSB0 instead
    folder = provision(tmp_path)
    capsys.readouterr()
    cfg = json.loads((folder / "config.json").read_text())
    for named in (cfg, {k: v for k, v in cfg.items() if k != "board"}):  # no board: the one it runs on
        (folder / "config.json").write_text(json.dumps(dict(named, link={"kind": "lora"})))
        for extra in (["--check-config"], ["--cycles", "1"]):
            code = cli.main(["node", "--dir", str(folder), *extra])
            out, err = capsys.readouterr()
            err = err.strip().splitlines()
            assert code == 2 and len(err) == 1 and not out, (extra, out, err)
            assert "config.json: config: board rpi has no LoRa radio; link.kind must be uart or udp" in err[0], err
    assert not (folder / "state.json").exists()  # no boot was counted


def test_a_bad_config_exits_2_before_ready_under_systemd(tmp_path):
    # what systemd sees of a config typo (deploy/citynode-node.service has no ExecStartPre, so
    # the main process must say it): one line, exit 2, which RestartPreventExitStatus does not
    # restart, and no READY=1 over the sd_notify socket, no boot counted
    folder = provision(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(cfg, interval_s="ten")))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.2)
    try:
        env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="2000000")
        p = subprocess.run(node_cmd(folder), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        said = []
        try:
            while True:
                said.append(notify.recv(256).decode())
        except TimeoutError:
            pass
    finally:
        notify.close()
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "config.json" in err[0], (p.returncode, err)
    unit_said = unit(UNIT)["Service"]
    assert str(p.returncode) in unit_said["RestartPreventExitStatus"].split()
    assert not any("READY=1" in s for s in said), said
    assert not (folder / "state.json").exists()


@pytest.mark.integration
def test_the_pi_node_runs_under_systemd_and_its_frames_reach_the_gateway(tmp_path, mosquitto):
    port = free_port(socket.SOCK_DGRAM)
    folder = provision(tmp_path, "--link", "udp", "--gateway", f"127.0.0.1:{port}", "--interval", "1")
    gw = Gateway(gwconfig.load(write_config(tmp_path / "gw", mosquitto.url, udp=f"127.0.0.1:{port}")),
                 keys=load_keys(tmp_path / "keys.toml")).start()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd's end of sd_notify
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="2000000")
    p = subprocess.Popen(node_cmd(folder), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    said = []

    def systemd():  # reads every datagram, as systemd does (a full socket would block the sender)
        while True:
            try:
                said.append(notify.recv(256).decode())
            except OSError:
                return

    reader = threading.Thread(target=systemd, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and gw.stats.counters["accepted"] < 3:
            time.sleep(0.1)
        node = {n["id"]: n for n in gw.status()["nodes"]}[NODE]
        assert gw.stats.counters["accepted"] >= 3 and node["board"] == "rpi" and node["boot"] == 1, node
        assert said[0].startswith("READY=1\nSTATUS=node pi-01 boot 1"), said
        # fed while it runs: WatchdogSec 2 s here, so at least every second, and not once per feed()
        feeds = said.count("WATCHDOG=1")
        assert 3 <= feeds <= 40, said
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        notify.shutdown(socket.SHUT_RDWR)
        notify.close()
        reader.join(5)
    assert said[-1] == "STOPPING=1", said[-3:]
    assert p.returncode == 0, err
    assert "Traceback" not in out + err, out + err
    lines = out.splitlines()
    assert lines[0] == "citynode 0.1.0 node pi-01 boot 1 reset power_on"
    assert "sensor bme280_adafruit: " in out and "sensor a02yyuw: " in out  # no sensors here: one line each
    assert lines[-1] == "citynode node: stopped (SIGTERM)"
    # started again (systemd's Restart=always): a new boot from the same folder; the operator's
    # signed reboot command resets it, which on a Pi is exit 3 (systemd starts the next boot)
    p = subprocess.Popen(node_cmd(folder), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20  # the command is signed for the boot the gateway last heard
        while time.monotonic() < deadline and {n["id"]: n for n in gw.status()["nodes"]}[NODE]["boot"] < 2:
            time.sleep(0.1)
        time.sleep(1.0)  # the retained state (published every 0.5 s) says boot 2 too
        code = cli.main(["command", "--node", NODE, "--op", "reboot", "--operator-keys",
                         str(tmp_path / "operator-keys.toml"), "--mqtt", mosquitto.url, "--prefix", "cn",
                         "--timeout", "20"])
        assert code == 0
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 3 and "Traceback" not in out + err, out + err
    assert "boot 2" in out.splitlines()[0]
    p = subprocess.run(node_cmd(folder, "--cycles", "2"), cwd=REPO, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "boot 3" in p.stdout, p.stdout + p.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and {n["id"]: n for n in gw.status()["nodes"]}[NODE]["boot"] < 3:
        time.sleep(0.1)
    gw.stop()
    node = {n["id"]: n for n in gw.status()["nodes"]}[NODE]
    assert node["boot"] == 3 and node["reset_cause"] == "command", node  # state.json said why it reset


def unit(path):
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_the_unit_file_verifies_and_is_hardened_like_the_gateways(tmp_path):
    node, gateway = unit(UNIT), unit(GATEWAY_UNIT)
    s = node["Service"]
    assert s["Type"] == "notify" and int(s["WatchdogSec"]) >= 30 and s["RestartPreventExitStatus"] == "2"
    assert s["ExecStart"] == "/opt/citynode/.venv/bin/citynode node --dir /var/lib/citynode-node"
    # no ExecStartPre check: RestartPreventExitStatus holds for the main process's exit only (a
    # failed ExecStartPre was restarted every RestartSec for ever); the node itself exits 2
    # before READY=1 (test_a_bad_config_exits_2_before_ready_under_systemd)
    assert "ExecStartPre" not in s and "2" in s["RestartPreventExitStatus"].split()
    assert node["Unit"]["StartLimitIntervalSec"] == "0"  # a failed start is retried, never left failed
    assert s["Restart"] == "always" and s["User"] == "citynode" and s["StateDirectory"] == "citynode-node"
    hardening = ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "ProtectKernelTunables",
                 "ProtectControlGroups", "RestrictAddressFamilies")
    for key in hardening:
        assert key in gateway["Service"], key  # what the gateway's unit has...
        assert s.get(key) == gateway["Service"][key], key  # ...the node's has too
    # the sensors' devices stay reachable: nothing that closes /dev (ProtectClock implies a DeviceAllow)
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert key not in s, key
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the parse above is the check on a machine without systemd
    # verify needs the ExecStart binaries to exist: point them at this checkout's citynode
    exe = pathlib.Path(sys.executable).parent / "citynode"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/citynode/.venv/bin/citynode", str(exe)))
    p = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
