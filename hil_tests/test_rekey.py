# Key rotation on the emulated Pico (issue 23, protocol/SPEC.md 4.5 and 6.6): 24 frames wait in
# the board's flash under key version 0 (made by the real node with no gateway to answer),
# the technician runs `provision --force` and `citynode flash`, and the real gateway (serial
# ingest on the board's port, the keys file provision wrote) forwards to a real mosquitto.
#   previous key kept (the default): all 24 old frames and the new ones reach MQTT, each once;
#   then 10 more frames wait, and a second re-key with --drop-old-key: the gateway refuses those
#   as `retired`, the node discards them (counted, reported in its state as `discarded`), and
#   its new frames are not held up behind them. One board for both (the Pico boots slowly).
import base64
import json
import subprocess
import sys
import threading
import time

import cbor2
import paho.mqtt.client as mqtt
import pytest

from hil_tests.conftest import flash_board, rig_log, skip_without_pico
from tools.provision import provision

NODE = "rk-01"
PREFIX = "rk"
BACKLOG = 24  # three of the node's 8-frame send windows (firmware/uplink.py _WINDOW)

class Watch:
    # every P/nodes/<node>/up (boot, seq) and the node's retained state, from a real mosquitto
    def __init__(self, port):
        self.ups = []
        self.contents = []
        self.state = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rk-watch")
        self.c.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/nodes/{NODE}/#", qos=1)
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on(self, _c, _u, msg):
        body = json.loads(msg.payload)
        with self.lock:
            if msg.topic.endswith("/up"):
                self.ups.append((body["boot"], body["seq"]))
                # what a frame says apart from its number: a frame renumbered under a later boot
                # (SPEC.md 6.5) keeps it, so a frame delivered twice shows as a repeat here
                payload = cbor2.loads(cbor2.loads(base64.b64decode(body["frame"])).value[2])
                self.contents.append(repr(sorted((k, v) for k, v in payload.items() if k not in (1, 2))))
            elif msg.topic.endswith("/state"):
                self.state = body

    def wait(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred():
                    return True
            time.sleep(0.2)
        return False

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.mark.pico
def test_rekey_with_frames_buffered_strands_nothing(request, tmp_path, mosquitto):
    from tools.rig.pico import PicoRig, heap_budget

    kind = request.node.callspec.params.get("board_kind", "pico")
    if kind != "pico":
        pytest.skip("runs on the emulated Pico (its own rig): flash wear and a real rp2 filesystem")
    skip_without_pico()
    node_dir, keys = tmp_path / "node", tmp_path / "keys.toml"
    provision(NODE, str(node_dir), str(keys), board="rp2", interval_s=2)
    rig = PicoRig(tmp_path / "pico-flash.bin", log=rig_log, power_on_open=False).start()
    gateway = None
    watch = Watch(mosquitto.port)
    conf = tmp_path / "gateway.toml"
    conf.write_text(f'[gateway]\nid = "gw-rk"\ndata_dir = "{tmp_path / "var"}"\n'
                    f'[mqtt]\nurl = "{mosquitto.url}"\ntopic_prefix = "{PREFIX}"\n'
                    f'[[ingest]]\nkind = "serial"\nport = "{rig.port}"\nbaudrate = 115200\n'
                    f'[nodes]\nkeys_file = "{keys}"\n')
    log = open(tmp_path / "gateway.log", "wb")

    def rekey(backlog, drop):
        # `backlog` frames wait in flash (the node as firmware/main.py builds it, its gateway
        # away), then provision --force [--drop-old-key] and citynode flash, as a technician does
        nonlocal gateway
        if gateway is not None:
            gateway.terminate()
            gateway.wait(20)
        made = heap_budget(rig.port, backlog=backlog)
        assert backlog <= made["live"] <= backlog + 3, made  # and what earlier boots left unanswered
        _path, cfg = provision(NODE, str(node_dir), str(keys), board="rp2", interval_s=2, force=True,
                               drop_old_key=drop)
        code, out, err = flash_board(rig.port, node_dir)
        assert code == 0, err or out
        with watch.lock:
            before = len(watch.ups)
        gateway = subprocess.Popen([sys.executable, "-m", "tools.cli", "gateway", "--config", str(conf)],
                                   stdout=log, stderr=subprocess.STDOUT)
        return made, cfg, before

    try:
        code, out, err = flash_board(rig.port, node_dir)
        assert code == 0, err or out
        # 1. the previous key kept: every buffered frame and the new ones reach MQTT, each once
        made, cfg, _ = rekey(BACKLOG, drop=False)
        assert cfg["key_version"] == 1
        live = made["live"]
        assert watch.wait(lambda: len(watch.ups) >= live + 3 and watch.state.get("boot", 0) > made["boot"], 300), (
            live, sorted(watch.ups), watch.state)
        with watch.lock:
            assert len(watch.contents) == len(set(watch.contents)), "a frame reached MQTT twice"
            own = len([u for u in watch.ups if u[0] == made["boot"]])
            assert not watch.state["rejected"] and watch.state.get("discarded", 0) == 0, watch.state
        print(f"rekey, previous key kept: {live} buffered, {len(watch.ups)} frames on MQTT "
              f"({own} of the {BACKLOG} under their own numbers)")

        # 2. a leaked key: --drop-old-key; the 10 frames under it are discarded, counted, and no stall
        made, cfg, before = rekey(10, drop=True)
        assert cfg["key_version"] == 2
        live = made["live"]
        assert watch.wait(lambda: watch.state.get("discarded") == live, 240), watch.state
        assert watch.state["rejected"].get("retired") == live
        assert watch.wait(lambda: len([u for u in watch.ups[before:] if u[0] > made["boot"]]) >= 3, 120), (
            watch.ups[before:], watch.state)
        with watch.lock:
            assert not [u for u in watch.ups[before:] if u[0] == made["boot"]]  # none of the discarded ones
            assert len(watch.contents) == len(set(watch.contents))
        print(f"rekey, old key dropped: {live} discarded (node state), retired {watch.state['rejected']}")
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(20)
        log.close()
        print((tmp_path / "gateway.log").read_text()[-3000:], file=sys.stderr)
        watch.close()
        rig.stop()
