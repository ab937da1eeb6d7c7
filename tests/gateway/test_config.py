# A bad config is refused with exit code 2 and one line naming the key; a good one
# passes --check-config. Most cases run the CLI in-process; one runs the real command.
import subprocess
import sys

import pytest

from gateway import config
from tests.gateway.conftest import REPO, check_config, write_config

GOOD_URL = "mqtt://127.0.0.1:1883"


def check(path):
    return check_config(path)


def test_good_config_checks(tmp_path, capsys):
    path = write_config(tmp_path, GOOD_URL)
    assert check(path) == 0
    assert "ok (3 node keys, 1 ingest link, mqtt " in capsys.readouterr().out  # "1 ingest link", not "links"
    s = config.load(path)
    assert s.data_dir == tmp_path / "var" and s.mqtt.port == 1883 and not s.mqtt.tls
    assert s.mqtt.client_id == "citynode-gw-test" and s.ingest[0].listen == ("127.0.0.1", 0)


BAD = [
    # (what to change in the text, key the message must name)
    (lambda t: t.replace('url = "mqtt://127.0.0.1:1883"', 'url = "http://127.0.0.1"'), "[mqtt] url"),
    (lambda t: t.replace('url = "mqtt://127.0.0.1:1883"\n', ""), "[mqtt] url"),
    (lambda t: t.replace('topic_prefix = "cn"', 'topic_prefix = "cn/#"'), "[mqtt] topic_prefix"),
    (lambda t: t.replace('id = "gw-test"', 'id = "gw test"'), "[gateway] id"),
    (lambda t: t.replace('id = "gw-test"', 'id = "gw@roof"'), "[gateway] id"),  # printable, not a SenML name
    (lambda t: t.replace('data_dir = "var"', "data_dir = 5"), "[gateway] data_dir"),
    (lambda t: t.replace('kind = "udp"', 'kind = "lora"'), "[ingest.0] kind"),
    (lambda t: t.replace('listen = "127.0.0.1:0"', 'listen = "localhost"'), "[ingest.0] listen"),
    (lambda t: t.replace("keepalive_s = 5", "keepalive_s = 5\nkeepalive = 5"), "[mqtt] keepalive"),
    (lambda t: t.replace("keepalive_s = 5", "keepalive_s = 1"), "[mqtt] keepalive_s"),
    (lambda t: t + '\n[outbox]\nmax_messages = "lots"\n', "[outbox] max_messages"),
    (lambda t: t.replace('keys_file = "keys.toml"', 'keys_file = "nope.toml"'), "[nodes] keys_file"),
    (lambda t: t.replace("keepalive_s = 5", 'keepalive_s = 5\nca = "keys.toml"'), "[mqtt] ca"),
    (lambda t: t.replace("[gateway]", "[gatway]"), "[top level] gateway"),
    (lambda t: t.replace("[nodes]", "nodes = 3\n[x]"), "nodes"),
    (lambda t: t + "\n[web]\nlisten = \"0.0.0.0:8080\"\n", "[web] listen"),  # not loopback, no token
    (lambda t: t + "\n[web]\nlisten = \"here\"\n", "[web] listen"),
    (lambda t: t + "\n[web]\nlisten = \"127.0.0.1:0\"\nhosts = [\"gw.example:443\"]\n", "[web] hosts"),
    (lambda t: t + "\n[[sensorthings]]\nnode = \"sew-01\"\nreading = \"l\"\n", "[sensorthings.0] datastream"),
    (lambda t: t + "\nthis is not toml\n", "not valid TOML"),
]


@pytest.mark.parametrize("edit,key", BAD, ids=[b[1] for b in BAD])
def test_bad_config_one_line_naming_the_key(tmp_path, capsys, edit, key):
    path = write_config(tmp_path, GOOD_URL)
    path.write_text(edit(path.read_text()))
    assert check(path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("citynode gateway: config error: ") and key in err, err


def test_bad_key_in_keys_file(tmp_path, capsys):
    path = write_config(tmp_path, GOOD_URL)
    (tmp_path / "keys.toml").write_text('[nodes.sew-01]\nkey = "abc"\n')
    assert check(path) == 2
    err = capsys.readouterr().err
    assert "[nodes] keys_file" in err and "[nodes.sew-01] key" in err and err.count("\n") == 1


@pytest.mark.parametrize("node", ["Sew(8)", "_probe", "sew@07"])
def test_keys_file_node_id_that_is_no_senml_name(tmp_path, capsys, node):
    path = write_config(tmp_path, GOOD_URL)
    (tmp_path / "keys.toml").write_text(f'[nodes."{node}"]\nkey = "{"ab" * 16}"\n')
    assert check(path) == 2
    err = capsys.readouterr().err
    assert f"node id {node!r}" in err and "letter or digit" in err and err.count("\n") == 1, err


def test_real_command_exit_code_2(tmp_path):
    path = write_config(tmp_path, "mqtts://")
    r = subprocess.run([sys.executable, "-m", "tools.cli", "gateway", "--config", str(path)], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "[mqtt] url" in r.stderr


def test_deploy_example_config_is_valid(tmp_path):
    # deploy/gateway.toml must stay a valid config (its /etc paths swapped for test files)
    import tomllib

    data = tomllib.loads((REPO / "deploy" / "gateway.toml").read_text())
    for k in ("ca", "cert", "key"):
        (tmp_path / k).write_text("x")
        data["mqtt"][k] = str(tmp_path / k)
    data["nodes"]["keys_file"] = str(tmp_path / "keys.toml")
    s = config.parse(data, tmp_path / "gateway.toml")
    assert s.mqtt.tls and s.mqtt.port == 8883 and [i.kind for i in s.ingest] == ["udp", "serial"]
    assert s.outbox.max_messages == 1_000_000 and s.mqtt.publisher == "thread" and s.outbox.linger_ms == 20


def test_port_in_use_is_one_line_naming_the_listener(tmp_path):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        path = write_config(tmp_path, GOOD_URL, udp=f"127.0.0.1:{port}")
        r = subprocess.run([sys.executable, "-m", "tools.cli", "gateway", "--config", str(path)], cwd=REPO,
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (f"citynode gateway: cannot start: [ingest.0] listen 127.0.0.1:{port}: "
                                                 "Address already in use")


def test_a_relative_serial_port_is_relative_to_the_config_file(tmp_path):
    # as data_dir and keys_file: deploy/gateway-laptop.toml names the rig's link "../lab/board"
    path = write_config(tmp_path / "gw", "mqtt://127.0.0.1:1883", serial=["../lab/board", "/dev/ttyUSB0",
                                                                          "rfc2217://127.0.0.1:7000"])
    ports = [i.port for i in config.load(path).ingest if i.kind == "serial"]
    assert ports == [str(tmp_path / "gw" / ".." / "lab" / "board"), "/dev/ttyUSB0", "rfc2217://127.0.0.1:7000"]


@pytest.mark.parametrize("name", ["citynode-gateway.service", "citynode-relay.service"])
def test_the_unit_does_not_restart_what_no_restart_fixes(tmp_path, name):
    # systemd restarts the daemon after every exit but the codes its unit lists: a config error
    # (2) and an install that does not fit (78, gateway InstallError: a paho-mqtt the adapter was
    # not written for), both checked by the main process itself. RestartPreventExitStatus holds
    # for the main process's exit only (systemd's service_shall_restart reads main_exec_status):
    # an ExecStartPre check that fails is restarted every RestartSec for ever.
    import pathlib
    import shutil

    from tests.tools.test_node import unit
    from tools.cli import EXIT_INSTALL, EXIT_USAGE  # tests/tools/test_errors.py: which errors they are

    path = REPO / "deploy" / name
    # and what a restart may fix is retried for as long as it takes: no start limit leaves it failed
    assert unit(path)["Unit"]["StartLimitIntervalSec"] == "0"
    s = unit(path)["Service"]
    assert s["RestartPreventExitStatus"].split() == [str(EXIT_USAGE), str(EXIT_INSTALL)] == ["2", "78"]
    assert s["Restart"] == "always"
    assert "ExecStartPre" not in s
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the parse above is the check on a machine without systemd
    exe = pathlib.Path(sys.executable).parent / "citynode"  # verify needs ExecStart's binary to exist
    copy = tmp_path / name
    copy.write_text(path.read_text().replace("/opt/citynode/.venv/bin/citynode", str(exe)))
    p = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
