# Fixtures for the gateway tests: keys, configs, a persistent-session subscriber, the
# gateway in-process (fast) or as a real `citynode gateway` process (for kill -9).
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from gateway import config
from gateway.daemon import Gateway
from gateway.files import write_private
from gateway.keys import format_keys
from tests.support.broker import free_port
from tests.support.senml_strict import UpChecker

REPO = pathlib.Path(__file__).resolve().parents[2]
NODES = {"sew-01": bytes(range(16)), "sew-02": bytes(range(1, 33)), "air-03": bytes(range(7, 27))}
COMMAND_KEYS = {n: bytes(range(200, 232)) for n in NODES}  # the operator's (SPEC 6.7): never in the gateway's files


def signed_down(node, boot, counter, op, arg=None):
    # what `citynode command --print` publishes on P/nodes/<node>/down
    from tools.command import down_payload

    return down_payload(COMMAND_KEYS[node], node, boot, counter, op, arg)


def check_config(path):
    # `citynode gateway --check-config PATH` as a user runs it: its exit code (tools/cli.py
    # maps the gateway's errors), its line on stderr
    from tools.cli import main

    return main(["gateway", "--check-config", str(path)])


def write_config(directory, broker_url, udp="127.0.0.1:0", extra_top="", serial=(), mqtt_extra="", **sections):
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / "keys.toml", format_keys(NODES))
    ingest = f'[[ingest]]\nkind = "udp"\nlisten = "{udp}"\n' if udp else ""
    for port in serial:
        ingest += f'[[ingest]]\nkind = "serial"\nport = "{port}"\nbaudrate = 115200\n'
    text = (
        f'[gateway]\nid = "gw-test"\ndata_dir = "var"\n{extra_top}\n'
        f'[mqtt]\nurl = "{broker_url}"\ntopic_prefix = "cn"\nreconnect_min_s = 0.1\nreconnect_max_s = 0.5\n'
        f"state_interval_s = 0.5\nkeepalive_s = 5\n{mqtt_extra}\n"
        f"{ingest}\n"
        '[nodes]\nkeys_file = "keys.toml"\n'
    )
    for name, body in sections.items():
        text += f"\n[{name}]\n{body}\n"
    path = directory / "gateway.toml"
    write_private(path, text)  # it may hold a password: the gateway refuses it open to others
    return path


class Subscriber:
    # A consumer with a persistent session (it must not miss messages across a broker
    # restart), collecting everything under the prefix.
    def __init__(self, port, topic="cn/#", client_id=None, tls=None, username=None, password=None):
        self.messages = []
        self.lock = threading.Lock()
        self.topic = topic
        self.senml = UpChecker()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"sub-{os.getpid()}-{port}",
                             clean_session=False, protocol=mqtt.MQTTv311)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.05, 0.3)
        if tls:
            self.c.tls_set(**tls)
        if username:
            self.c.username_pw_set(username, password)
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        self.wait(lambda: self.c.is_connected(), 10)

    def _on_message(self, c, u, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))
            if msg.topic.endswith("/up"):  # every up message must be SenML that RFC 8428 allows
                try:
                    self.senml.check(msg.topic, json.loads(msg.payload))
                except ValueError as e:
                    self.senml.problems.append(f"{msg.topic}: not JSON ({e})")

    def on(self, suffix):
        with self.lock:
            return [(t, json.loads(p)) for t, p, _ in self.messages if t.endswith(suffix)]

    def ups(self):
        return [j for _, j in self.on("/up")]

    def keys_up(self):
        return {(j["node"], j["boot"], j["seq"]) for j in self.ups()}

    def wait(self, pred, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return pred()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()
        bad = self.senml.problems
        assert not bad, f"{len(bad)} SenML problems in {self.senml.checked} up messages, first: {bad[:5]}"


@pytest.fixture
def subscriber(mosquitto):
    s = Subscriber(mosquitto.port)
    yield s
    s.close()


@pytest.fixture
def gateway_factory(tmp_path, mosquitto):
    started = []

    def make(udp="127.0.0.1:0", **kw):
        path = write_config(tmp_path / "gw", mosquitto.url, udp=udp, **kw)
        gw = Gateway(config.load(path)).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        if gw.started and not gw._stop.is_set():
            gw.stop()


def senml_fails_on(monkeypatch, seq):
    # an output failure, injected: the SenML pack (gateway/consumers.py) raises on frames of that
    # seq (no reading the protocol takes makes an output raise today: tests of the rule inject it)
    from gateway.consumers import SenmlPack

    output_fails_on(monkeypatch, SenmlPack, seq)


def output_fails_on(monkeypatch, output, seq):
    # output (an Output class: gateway/outputs.py Envelope, gateway/consumers.py SenmlPack ...)
    # raises on the frames of that seq it is asked to convert from now on
    made = output.messages

    def faulty(self, f):
        if f.msg["seq"] == seq:
            raise ValueError(f"injected: cannot convert seq {seq}")
        return made(self, f)

    monkeypatch.setattr(output, "messages", faulty)


def wait_for(cond, timeout=30.0):
    # -> True once cond() is true, False after timeout s
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


class HeldCommits:
    # The gateway's commits wait until release(): a hung disk, or an SD card's slow fsync.
    def __init__(self, gw, hold_s=60.0):
        self.gw = gw
        self.real = gw.store.commit
        self.entered = threading.Event()  # a commit is waiting
        self.released = threading.Event()

        def held(**kw):
            self.entered.set()
            self.released.wait(hold_s)
            return self.real(**kw)

        gw.store.commit = held

    def release(self):
        self.gw.store.commit = self.real
        self.released.set()


class GatewayProcess:
    # `python -m tools.cli gateway --config FILE` as a child process we can kill -9.
    def __init__(self, config_path, env=None):
        self.config_path = config_path
        self.env = env
        self.proc = None
        self.log = pathlib.Path(config_path).parent / "gateway.log"

    def start(self, wait_port=None):
        env = {**os.environ, "PYTHONPATH": str(REPO), **(self.env or {})}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "gateway", "--config",
                                          str(self.config_path)], cwd=REPO, env=env, stdout=log, stderr=log)
        if wait_port:
            import socket
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    try:
                        s.bind(("127.0.0.1", wait_port))
                    except OSError:
                        return self  # the gateway holds the port now
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                time.sleep(0.05)
            raise AssertionError("gateway did not bind its UDP port: " + self.log.read_text()[-2000:])
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


@pytest.fixture
def udp_port():
    import socket
    return free_port(socket.SOCK_DGRAM)
