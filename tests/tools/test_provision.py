# citynode provision: a fresh key, a config the node can load, the gateway keys file updated,
# mode 0600, and no key replaced without --force.
import json
import stat
import subprocess
import sys

from gateway.keys import load_keys
from tools import cli


def provision(tmp_path, *extra, node="sew-07", out="node"):
    return cli.main(["provision", "--node", node, "--out", str(tmp_path / out),
                     "--keys", str(tmp_path / "keys.toml"), *extra])


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_provision_writes_config_and_keys_0600(tmp_path):
    assert provision(tmp_path, "--board", "esp32") == 0
    config = json.loads((tmp_path / "node" / "config.json").read_text())
    keys = load_keys(tmp_path / "keys.toml")
    assert config["node"] == "sew-07" and config["board"] == "esp32"
    assert bytes.fromhex(config["key"]) == keys["sew-07"]
    assert len(keys["sew-07"]) == 16
    assert mode(tmp_path / "keys.toml") == 0o600
    assert mode(tmp_path / "node" / "config.json") == 0o600


def test_keys_are_fresh_and_other_nodes_kept(tmp_path):
    assert provision(tmp_path, node="a") == 0
    assert provision(tmp_path, node="b", out="b") == 0
    keys = load_keys(tmp_path / "keys.toml")
    assert set(keys) == {"a", "b"} and keys["a"] != keys["b"]


def test_existing_key_needs_force(tmp_path, capsys):
    assert provision(tmp_path) == 0
    before = load_keys(tmp_path / "keys.toml")["sew-07"]
    assert provision(tmp_path, out="other") == 1
    err = capsys.readouterr().err
    assert "already has a key for sew-07" in err and "--force" in err and "Traceback" not in err
    assert load_keys(tmp_path / "keys.toml")["sew-07"] == before
    assert provision(tmp_path, "--force") == 0
    after = load_keys(tmp_path / "keys.toml")["sew-07"]
    assert after != before
    assert json.loads((tmp_path / "node" / "config.json").read_text())["key"] == after.hex()


def test_udp_link_validation(tmp_path, capsys):
    assert provision(tmp_path, "--link", "udp", "--board", "esp32") == 1
    assert "--gateway" in capsys.readouterr().err
    assert provision(tmp_path, "--gateway", "10.0.0.2:5683", "--board", "esp32") == 1
    assert "--wifi-ssid" in capsys.readouterr().err
    assert provision(tmp_path, "--gateway", "10.0.0.2:99999", "--board", "linux") == 1
    assert "HOST:PORT" in capsys.readouterr().err
    assert provision(tmp_path, "--gateway", "10.0.0.2:5683", "--wifi-ssid", "city", "--board", "rp2") == 0
    link = json.loads((tmp_path / "node" / "config.json").read_text())["link"]
    assert link == {"kind": "udp", "host": "10.0.0.2", "port": 5683, "wifi_ssid": "city", "wifi_password": ""}
    assert not (tmp_path / "keys.toml.tmp").exists()


def test_bad_node_id_and_broken_keys_file(tmp_path, capsys):
    for node in ("a/b", "Sew(8)", "_probe", "sew@07", "temp 1"):  # the last three were accepted once
        assert provision(tmp_path, node=node) == 1
        err = capsys.readouterr().err
        assert f"node id {node!r}" in err and "letter or digit" in err and err.count("\n") == 1, err
    assert not (tmp_path / "keys.toml").exists()
    (tmp_path / "keys.toml").write_text("[nodes\n")
    assert provision(tmp_path) == 1
    err = capsys.readouterr().err
    assert "not valid TOML" in err and "Traceback" not in err
    assert not (tmp_path / "node" / "config.json").exists()


def test_console_script_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "provision", "--node", "st-1", "--board", "linux",
                           "--out", str(tmp_path / "n"), "--keys", str(tmp_path / "k.toml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "citynode flash" in proc.stdout


def test_short_interval_passes_the_firmware_config_check(tmp_path):
    # firmware/config.py refuses storm_interval_s > interval_s; provision keeps them consistent
    from firmware.config import validate

    assert provision(tmp_path, "--interval", "5", "--board", "sim") == 0
    config = json.loads((tmp_path / "node" / "config.json").read_text())
    assert config["interval_s"] == 5 and config["storm_interval_s"] == 5
    assert validate(config)["key_bytes"] == bytes.fromhex(config["key"])

