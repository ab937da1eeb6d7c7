# Acceptance on two emulated Picos (run by bench/lora_bench.py, `citynode bench lora`: about
# 4 minutes, too long for every CI run; hil_tests/test_lora.py has the quick radio test): a node
# flashed with `citynode flash` and a LoRa link, a radio modem (firmware/modem.py), both with
# Waveshare's SX1262 HAT on the simulated air, the real gateway (`citynode gateway`, serial
# ingest on the modem's USB console) and a real mosquitto.
import json
import shutil
import subprocess
import sys
import time

import pytest

from hil_tests.conftest import rig_log
from hil_tests.test_lora import lora_flash, write_files  # noqa: F401 - lora_flash is a fixture

pytestmark = pytest.mark.pico


MODEM_MAIN = "from firmware import modem\nmodem.main()\n"


def flash_modem(tmp_path, flash):
    # the radio modem's board: micropython-lib's drivers, the firmware's modem and what it
    # imports (compiled as `citynode flash` compiles them), its radio settings and main.py
    from tools.upload import compile_sources, manifest

    copy = tmp_path / "modem.bin"
    shutil.copyfile(flash, copy)
    files = compile_sources(sorted(set(manifest("rp2")) | {"firmware/modem.py"}))
    write_files(copy, files + [("modem.json", b'{"freq_khz": 868100, "sf": 7}'), ("main.py", MODEM_MAIN.encode())])
    return copy


def test_node_and_radio_modem_through_the_real_gateway(board_kind, request, tmp_path, mosquitto):
    # Acceptance: a node Pico (citynode flash with a LoRa link, simulated level sensor and
    # climate, the emulated SX1262) and a radio-modem Pico on the simulated air, the real
    # gateway (`citynode gateway`, serial ingest on the modem's port) and mosquitto: frames
    # arrive exactly once, the ACKs come back over the air (the node's buffer drains), the
    # reception (RSSI, SNR) is in the gateway's state, and an operator's compact command reaches
    # the node over the air and is applied.
    import paho.mqtt.client as mqtt

    from hil_tests.conftest import flash_board
    from protocol import message
    from tools.provision import provision
    from tools.rig.lora_air import PicoAir
    from tools.rig.pico import PicoRig

    if board_kind != "pico":
        pytest.skip("the LoRa HAT is on the emulated Pico")
    flash = request.getfixturevalue("lora_flash")
    _, cfg = provision("sew-lora", str(tmp_path / "node"), str(tmp_path / "keys.toml"), board="rp2", interval_s=5)
    cfg.update(link={"kind": "lora", "freq_khz": 868100, "sf": 7, "power_dbm": 14}, storm_interval_s=5)
    (tmp_path / "node" / "config.json").write_text(json.dumps(cfg))
    modem_flash = flash_modem(tmp_path, flash)
    node_flash = tmp_path / "node.bin"
    shutil.copyfile(flash, node_flash)
    air = PicoAir()
    node = PicoRig(node_flash, world={"spike_p": 0.0, "dropout_p": 0.0}, log=rig_log).start()
    code, out, err = flash_board(node.port, tmp_path / "node")
    assert code == 0, (out + err)[-2000:]
    modem = PicoRig(modem_flash, log=rig_log, power_on_open=False).start()
    r_node = air.attach(node, "node", (300.0, 0.0))
    r_modem = air.attach(modem, "modem", (0.0, 0.0))
    conf = tmp_path / "gateway.toml"
    conf.write_text(f'[gateway]\nid = "gw-lora"\ndata_dir = "{tmp_path / "var"}"\n'
                    f'[mqtt]\nurl = "{mosquitto.url}"\ntopic_prefix = "lora"\nstate_interval_s = 1\n'
                    f'[[ingest]]\nkind = "serial"\nport = "{modem.port}"\nbaudrate = 115200\n'
                    f'[nodes]\nkeys_file = "{tmp_path / "keys.toml"}"\n')
    ups, states = [], {}
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lora-sub")
    sub.on_connect = lambda c, *_: c.subscribe("lora/#", qos=1)

    def on_message(_c, _u, m):
        if m.topic.endswith("/up"):
            ups.append(json.loads(m.payload))
        elif m.topic == "lora/nodes/sew-lora/state":
            states["last"] = json.loads(m.payload)

    sub.on_message = on_message
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    log = open(tmp_path / "gateway.log", "wb")
    gw = subprocess.Popen([sys.executable, "-m", "tools.cli", "gateway", "--config", str(conf)], stdout=log,
                          stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(ups) < 4:
            time.sleep(0.5)
        time.sleep(3)
        keys = {"sew-lora": bytes.fromhex(cfg["key"])}
        seen = [(u["boot"], u["seq"]) for u in ups]
        print("ups", seen, "air", air.air.counts, r_node.counts, r_modem.counts)
        assert len(seen) >= 4 and len(set(seen)) == len(seen), seen  # exactly once
        for u in ups:  # our MAC, checked by this consumer on the forwarded frame
            import base64

            assert message.decode(base64.b64decode(u["frame"]), keys.get)["seq"] == u["seq"]
        assert any(r["n"] == "l" for u in ups for r in u["senml"])
        # ACKs over the air: the modem sent (compact) ACKs and the node heard them
        assert r_modem.counts["sent"] >= 3 and r_node.counts["received"] >= 3
        assert "rssi" in (states.get("last") or {}).get("link", ""), states
        assert (states["last"].get("rssi_dbm"), states["last"].get("snr_db")) != (None, None), states
        # the operator's command over the air (SPEC.md 13.6): `citynode command` sees a LoRa node and
        # signs the compact form; the gateway relays it after the ACK of a fresh frame, the modem
        # sends the operator's packet, the node applies it and reports it
        t0 = time.monotonic()
        cmd = subprocess.run([sys.executable, "-m", "tools.cli", "command", "--node", "sew-lora", "--op", "interval",
                              "--arg", "7", "--operator-keys", str(tmp_path / "operator-keys.toml"), "--mqtt",
                              mosquitto.url, "--prefix", "lora", "--wait", "--timeout", "120"],
                             capture_output=True, text=True, timeout=150)
        print("command", cmd.returncode, cmd.stdout, cmd.stderr, "%.1f s" % (time.monotonic() - t0))
        assert cmd.returncode == 0 and "(compact, for LoRa)" in cmd.stdout and "applied" in cmd.stdout, cmd
        assert not air.toa_mismatch
    finally:
        gw.terminate()
        gw.wait(10)
        log.close()
        sub.loop_stop()
        sub.disconnect()
        print((tmp_path / "gateway.log").read_text()[-3000:])
        node.stop()
        modem.stop()
        air.close()
