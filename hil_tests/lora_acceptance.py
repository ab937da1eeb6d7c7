# Acceptance on emulated Picos (run by bench/lora_bench.py, `citynode bench lora`: about 3 + 15
# minutes, too long for every CI run; hil_tests/test_lora.py has the quick radio test): a node
# flashed with `citynode flash` and a LoRa link (three colliding ones in the second test), a
# radio modem (firmware/modem.py), each with Waveshare's SX1262 HAT on the simulated air, the
# real gateway (`citynode gateway`, serial ingest on the modem's USB console) and a real mosquitto.
import json
import os
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


def gateway_config(tmp_path, broker_url, modem_port):
    # the gateway's config: the modem's USB console as its serial ingest, topics under lora/
    conf = tmp_path / "gateway.toml"
    conf.write_text(f'[gateway]\nid = "gw-lora"\ndata_dir = "{tmp_path / "var"}"\n'
                    f'[mqtt]\nurl = "{broker_url}"\ntopic_prefix = "lora"\nstate_interval_s = 1\n'
                    f'[[ingest]]\nkind = "serial"\nport = "{modem_port}"\nbaudrate = 115200\n'
                    f'[nodes]\nkeys_file = "{tmp_path / "keys.toml"}"\n')
    return conf


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
    # SF7 at 868.1 MHz, the modem's; a frame every 5 s (storm mode no slower: provision keeps it)
    _, cfg = provision("sew-lora", str(tmp_path / "node"), str(tmp_path / "keys.toml"), board="rp2", interval_s=5,
                       link="lora", lora={"sf": 7})
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
    conf = gateway_config(tmp_path, mosquitto.url, modem.port)
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


@pytest.mark.timeout(1800)  # four emulated Picos, and a collided frame waits 10 min for its resend
def test_three_nodes_colliding_still_deliver_everything(board_kind, request, tmp_path, mosquitto):
    # Acceptance: three node Picos at the same distance from the radio modem, powered on together
    # at SF8 with one frequency: their packets overlap on the air (no capture: equal power), the
    # backoff after an unanswered send separates them, and every frame of each reaches MQTT
    # exactly once through the real gateway, with the ACKs back over the air.
    import paho.mqtt.client as mqtt

    from tools.provision import provision
    from tools.rig.lora_air import PicoAir
    from tools.rig.pico import PicoRig
    from tools.upload import build_bundle

    if board_kind != "pico":
        pytest.skip("the LoRa HAT is on the emulated Pico")
    flash = request.getfixturevalue("lora_flash")
    sf, names = 8, ("sew-a", "sew-b", "sew-c")
    flashes, keys = [], {}
    for i, name in enumerate(names):
        # a frame every 30 s (in storm mode too): about half of the 1 % an SF8 frame allows, room for resends
        _, cfg = provision(name, str(tmp_path / name), str(tmp_path / "keys.toml"), board="rp2", interval_s=30,
                           link="lora", lora={"sf": sf})
        keys[name] = bytes.fromhex(cfg["key"])
        image = tmp_path / f"{name}.bin"
        if i == 0:  # the firmware once, then each node's own config on a copy
            shutil.copyfile(flash, image)
            write_files(image, build_bundle(cfg))
        else:
            shutil.copyfile(flashes[0], image)
            write_files(image, [("config.json", json.dumps(cfg, sort_keys=True).encode())])
        flashes.append(image)
    modem_flash = tmp_path / "modem-src.bin"
    shutil.copyfile(flash, modem_flash)
    modem_flash = flash_modem(tmp_path, modem_flash)
    write_files(modem_flash, [("modem.json", json.dumps({"freq_khz": 868100, "sf": sf}).encode())])
    air = PicoAir()
    modem = PicoRig(modem_flash, log=rig_log, power_on_open=False).start()
    r_modem = air.attach(modem, "modem", (0.0, 0.0))
    conf = gateway_config(tmp_path, mosquitto.url, modem.port)
    ups = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lora-sub3")
    sub.on_connect = lambda c, *_: c.subscribe("lora/nodes/+/up", qos=1)
    sub.on_message = lambda _c, _u, m: ups.append(json.loads(m.payload))
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    log = open(tmp_path / "gateway.log", "wb")
    gw = subprocess.Popen([sys.executable, "-m", "tools.cli", "gateway", "--config", str(conf)], stdout=log,
                          stderr=subprocess.STDOUT)
    nodes, radios, fds = [], [], []
    try:
        for i, image in enumerate(flashes):  # 300 m out in three directions: equal power at the modem
            rig = PicoRig(image, world={"spike_p": 0.0, "dropout_p": 0.0}, log=rig_log)
            nodes.append(rig.start())
            radios.append(air.attach(rig, names[i], [(300.0, 0.0), (0.0, 300.0), (-300.0, 0.0)][i]))
        time.sleep(5)  # the gateway and the modem listen, the emulators are loaded
        # power on together (a board powers on when its port is opened): the nodes run in step
        # and their first frames meet on the air
        fds = [os.open(rig.port, os.O_RDWR | os.O_NOCTTY) for rig in nodes]
        time.sleep(1)
        for fd in fds:  # then let go: a board keeps running while nobody holds its port
            os.close(fd)
        fds = []

        def per_node():
            return {n: sorted((u["boot"], u["seq"]) for u in ups if u["node"] == n) for n in names}

        def missing(seen, upto):
            return sorted(set(range(upto + 1)) - {s for _, s in seen})

        # until they collided and each sent 4 frames; then every frame up to there must arrive: a
        # frame no ACK covered is resent after 10 minutes (firmware/lora_link.py)
        t0 = time.monotonic()
        deadline = t0 + 300
        while time.monotonic() < deadline and not (air.air.counts["lost_collision"] and all(
                len(v) >= 4 for v in per_node().values())):
            time.sleep(1)
        upto = {n: max(s for _, s in v) for n, v in per_node().items() if v}
        gaps = {n: missing(per_node()[n], upto[n]) for n in upto}
        t1 = time.monotonic()
        while time.monotonic() < t1 + 780 and any(missing(per_node()[n], upto[n]) for n in upto):
            time.sleep(2)
        got = per_node()
        print("3 nodes: collided and 4 frames each after %.0f s (gaps then %s), all delivered %.0f s later; "
              "frames %s, air %s, modem %s, nodes %s" % (
                  t1 - t0, gaps, time.monotonic() - t1, {n: len(v) for n, v in got.items()}, air.air.counts,
                  r_modem.counts, [r.counts for r in radios]))
        assert air.air.counts["lost_collision"] > 0  # they did collide
        for n, seen in got.items():
            assert len(upto) == 3 and len(seen) >= 4 and len(set(seen)) == len(seen), (n, seen)  # exactly once
            assert not missing(seen, upto[n]), (n, missing(seen, upto[n]))  # none lost
        assert all(r.counts["received"] >= 3 for r in radios)  # ACKs over the air to every node
        assert not air.toa_mismatch
    finally:
        for fd in fds:
            os.close(fd)
        gw.terminate()
        gw.wait(10)
        log.close()
        sub.loop_stop()
        sub.disconnect()
        print((tmp_path / "gateway.log").read_text()[-2000:])
        for rig in nodes + [modem]:
            rig.stop()
        air.close()
