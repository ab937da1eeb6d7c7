# Broker roles: deploy/mosquitto-roles.conf and deploy/mosquitto.acl as shipped, on a real
# mosquitto on a free loopback port (its TLS listener swapped for a plain loopback one), with
# logins made by mosquitto_passwd. Anonymous clients and wrong passwords are refused; a
# consumer can publish to no topic; an operator only to the command topics; the real gateway
# with the gateway login forwards frames end to end and receives the operator's commands.
import os
import pathlib
import shutil
import subprocess
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from gateway import config
from gateway.daemon import Gateway
from tests.gateway.conftest import NODES, wait_for, write_config
from tests.support.broker import Mosquitto
from tests.support.udpnode import UdpNode

pytestmark = pytest.mark.integration

REPO = pathlib.Path(__file__).resolve().parents[2]
LOGINS = {"gw-rooftop-1": "gw-pass-1", "operator": "op-pass-2", "consumer": "co-pass-3"}
# every topic family a role might try to write
TOPICS = ["citynode/nodes/sew-01/down", "citynode/nodes/sew-01/up", "citynode/nodes/sew-01/state",
          "citynode/gateways/gw-test/state", "citynode/anything", "v1.1/Datastreams(1)/Observations",
          "homeassistant/sensor/x/config"]
READS = ["citynode/#", "v1.1/#", "homeassistant/#"]


class RolesBroker(Mosquitto):
    # the shipped roles config, with the test's paths and a loopback listener instead of TLS
    def __init__(self, workdir):
        super().__init__(workdir)
        self.passwd = self.workdir / "citynode.passwd"
        self.acl = self.workdir / "citynode.acl"
        shutil.copy(REPO / "deploy" / "mosquitto.acl", self.acl)
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for i, (user, password) in enumerate(LOGINS.items()):
            subprocess.run([tool, *(["-c"] if i == 0 else []), "-b", str(self.passwd), user, password], check=True,
                           capture_output=True)
        os.chmod(self.passwd, 0o600)

    def conf(self):
        lines = [f"listener {self.port} 127.0.0.1", f"persistence_location {self.workdir}/"]
        if os.geteuid() == 0:
            lines.append("user root")  # see Mosquitto.conf
        for line in (REPO / "deploy" / "mosquitto-roles.conf").read_text().splitlines():
            word = line.split(" ", 1)[0]
            if word in ("listener", "cafile", "certfile", "keyfile", "persistence_location"):
                continue
            if word == "password_file":
                line = f"password_file {self.passwd}"
            elif word == "acl_file":
                line = f"acl_file {self.acl}"
            lines.append(line)
        return "\n".join(lines) + "\n"


@pytest.fixture
def broker(tmp_path):
    b = RolesBroker(tmp_path / "broker").start()
    yield b
    b.stop()


class Client:
    # a paho client logged in as `user` (None: anonymous); .refused when the broker said no
    def __init__(self, port, user=None, password=None, subscribe=()):
        self.messages = []
        self.lock = threading.Lock()
        self.connack = threading.Event()
        self.suback = threading.Event()
        self.refused = None
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv311)
        if user:
            self.c.username_pw_set(user, password if password is not None else LOGINS[user])
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.suback.set()
        self.c.on_message = self._on_message
        self.subscribe = list(subscribe)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        assert self.connack.wait(10), "no CONNACK"
        if not self.refused and self.subscribe:
            assert self.suback.wait(10)

    def _on_connect(self, c, u, flags, rc, props):
        self.refused = rc.is_failure
        if rc.is_failure:
            c.disconnect()
        elif self.subscribe:
            c.subscribe([(t, 1) for t in self.subscribe])
        self.connack.set()

    def _on_message(self, c, u, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def got(self, marker):
        with self.lock:
            return [t for t, p in self.messages if marker in p]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def publish_all(port, user, marker, topics=TOPICS):
    # one fresh login per topic: mosquitto 2.0 drops a client whose publish the ACL denies
    for t in topics:
        c = Client(port, user)
        assert not c.refused
        info = c.c.publish(t, b'{"op": "reboot", "marker": "' + marker + b'"}', qos=1, retain=False)
        try:
            info.wait_for_publish(3)
        except (RuntimeError, ValueError):
            pass  # dropped by the broker for it
        c.close()


def test_anonymous_and_wrong_password_are_refused(broker):
    assert Client(broker.port).refused
    assert Client(broker.port, "consumer", "wrong").refused
    assert Client(broker.port, "nobody", "x").refused


def test_consumer_writes_nowhere_operator_only_commands(broker):
    watch = Client(broker.port, "consumer", subscribe=READS)
    try:
        assert not watch.refused
        publish_all(broker.port, "consumer", b"from-consumer")
        publish_all(broker.port, "operator", b"from-operator")
        assert wait_for(lambda: watch.got(b"from-operator"))
        time.sleep(0.5)  # anything else the broker let through would have arrived by now
        assert watch.got(b"from-consumer") == []
        assert watch.got(b"from-operator") == ["citynode/nodes/sew-01/down"]
    finally:
        watch.close()


def test_gateway_login_end_to_end(broker, tmp_path):
    path = write_config(tmp_path / "gw", broker.url, mqtt_extra='username = "gw-rooftop-1"\npassword = "gw-pass-1"')
    path.write_text(path.read_text().replace('topic_prefix = "cn"', 'topic_prefix = "citynode"'))
    watch = Client(broker.port, "consumer", subscribe=READS)
    operator_sees = Client(broker.port, "operator", subscribe=["citynode/#"])
    gw = Gateway(config.load(path)).start()
    try:
        node = UdpNode("sew-01", NODES["sew-01"], gw.udp_addresses[0])
        assert node.run(20, deadline_s=30)
        assert wait_for(lambda: len([t for t, _ in watch.messages if t == "citynode/nodes/sew-01/up"]) == 20, 20)
        assert wait_for(lambda: any(t == "citynode/gateways/gw-test/state" for t, _ in watch.messages))
        assert wait_for(lambda: any(t == "citynode/nodes/sew-01/up" for t, _ in operator_sees.messages))
        assert wait_for(lambda: gw.counters()["outbox_depth"] == 0)

        def relayed():
            c = gw.counters()
            return sum(n for k, n in c.items() if isinstance(n, int) and ("command" in k or "downlink" in k))

        before = relayed()
        publish_all(broker.port, "consumer", b"consumer-cmd", ["citynode/nodes/sew-01/down"])
        time.sleep(0.5)
        assert relayed() == before  # the broker never gave the gateway the consumer's command
        publish_all(broker.port, "operator", b"operator-cmd", ["citynode/nodes/sew-01/down"])
        assert wait_for(lambda: relayed() > before)  # the operator's reached the gateway (queued or refused)
    finally:
        gw.stop()
        watch.close()
        operator_sees.close()
