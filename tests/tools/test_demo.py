# citynode demo: simulated nodes -> the real gateway -> MQTT, with no broker installed
# (embedded amqtt) or against a given broker; one summary line "<F> frames from <M> nodes".
import os
import re
import subprocess
import sys

import pytest

from tests.gateway.conftest import Subscriber

SUMMARY = re.compile(r"(\d+) frames from (\d+) nodes")


def demo(*args, env=None):
    # the status page on a free port unless the test names one: the default 127.0.0.1:8080 is
    # taken by whichever demo runs beside this one (make test runs two workers)
    web = () if "--web" in args else ("--web", "127.0.0.1:0")
    return subprocess.run([sys.executable, "-m", "tools.cli", "demo", *args, *web], capture_output=True, text=True,
                          timeout=90, env=env)


def test_demo_with_the_embedded_broker_shows_a_storm():
    # no mosquitto reachable: PATH without the system folders it lives in
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))
    proc = demo("--duration", "7", "--nodes", "2", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    m = SUMMARY.search(last)
    assert m, last
    frames, nodes = int(m.group(1)), int(m.group(2))
    assert nodes == 2 and frames >= 20
    assert "embedded amqtt" in proc.stderr
    # the rain arrives after ~2 s: storm mode (faster reporting) and a level well above dry weather
    assert re.search(r"sew-0[12].*\b(storm|ALARM)\b", proc.stdout), proc.stdout[-1500:]
    assert float(re.search(r"highest level ([\d.]+) m", last).group(1)) > 1.0


@pytest.mark.integration
def test_demo_against_a_given_broker(mosquitto):
    # a consumer beside the demo: every up message of the real firmware's storm is strict SenML
    # (tests/support/senml_strict.py, checked again in close())
    sub = Subscriber(mosquitto.port, topic="#", client_id="demo-consumer")
    try:
        proc = demo("--duration", "3", "--nodes", "3", "--mqtt", mosquitto.url)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        m = SUMMARY.search(proc.stdout.strip().splitlines()[-1])
        assert m and int(m.group(2)) == 3 and int(m.group(1)) >= 3
        assert "embedded" not in proc.stderr
        assert sub.wait(lambda: sub.senml.checked >= int(m.group(1)), 10)
        assert sub.senml.problems == []
    finally:
        sub.close()


def test_demo_with_an_unreachable_broker_says_so_in_one_line():
    proc = demo("--duration", "2", "--mqtt", "mqtt://127.0.0.1:1")
    assert proc.returncode == 1
    assert "citynode demo: cannot reach the MQTT broker at mqtt://127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_lora_and_fleet_together_are_refused_in_one_line():
    # the fleet's nodes send over UDP: --lora beside --fleet was ignored, the demo ran the fleet
    proc = demo("--lora", "--fleet", "--duration", "2", "--mqtt", "mqtt://127.0.0.1:1")
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_taken_web_port_is_said_and_duration_replaces_ctrl_c():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = demo("--duration", "2", "--nodes", "1", "--web", f"127.0.0.1:{port}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r"demo: status page http://127\.0\.0\.1:(\d+)/ \(127\.0\.0\.1:(\d+) is taken, so another port\)",
                  proc.stderr)
    assert m and m.group(2) == str(port) and m.group(1) != str(port), proc.stderr
    assert "Ctrl-C" not in proc.stderr and "stops after 2 s" in proc.stderr


@pytest.mark.integration
def test_demo_fleet_three_gateways_one_copy_of_each_frame(mosquitto):
    # --fleet: 3 NATS servers, 3 gateways, the relay; nodes heard by 2 or 3 gateways each, and an
    # independent subscriber on the relay's broker sees each frame once
    sub = Subscriber(mosquitto.port, topic="citynode/nodes/+/up", client_id="fleet-consumer")
    try:
        proc = demo("--fleet", "--duration", "8", "--nodes", "4", "--mqtt", mosquitto.url, "--web", "127.0.0.1:0")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        last = proc.stdout.strip().splitlines()[-1]
        frames = int(SUMMARY.search(last).group(1))
        assert "through 3 gateways, JetStream and the relay" in last and "0 duplicates" in last, last
        assert "/fleet" in proc.stderr
        keys = [(j["node"], j["boot"], j["seq"]) for j in sub.ups()]
        assert len(keys) >= frames >= 20 and len(set(keys)) == len(keys)
        assert {j["gateway"] for j in sub.ups()} <= {"gw-1", "gw-2", "gw-3"}
    finally:
        sub.close()


@pytest.mark.integration
def test_demo_over_the_simulated_lora_air_keeps_the_duty_cycle(mosquitto):
    # --lora: the nodes' LoRa links on the simulated air, the gateway's radio forwarding to the
    # real gateway; the air counts every packet's airtime and the demo says the worst hour
    proc = demo("--lora", "--duration", "6", "--nodes", "3", "--mqtt", mosquitto.url, "--web", "off")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    m = SUMMARY.search(proc.stdout.strip().splitlines()[-1])
    assert m and int(m.group(2)) == 3 and int(m.group(1)) >= 20, proc.stdout[-800:]
    air = re.search(r"LoRa air: (\d+) packets, (\d+) lost to collisions; worst hour of airtime ([\d.]+) % for a "
                    r"node, ([\d.]+) % for the gateway", proc.stderr)
    assert air, proc.stderr[-1500:]
    assert int(air.group(1)) > int(m.group(1)) and float(air.group(3)) <= 1.0 and float(air.group(4)) <= 1.0
