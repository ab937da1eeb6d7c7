# citynode provision: a fresh key, a config the node can load, the gateway keys file updated,
# mode 0600, and no key replaced without --force.
import json
import stat
import subprocess
import sys

import pytest

from gateway.keys import load_keys
from tools import cli


def provision(tmp_path, *extra, node="sew-07", out="node"):
    return cli.main(["provision", f"--node={node}", "--out", str(tmp_path / out),
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


def test_command_key_goes_to_the_operator_keys_file_only(tmp_path):
    # SPEC 6.7: the node and the operator hold the command key; the gateway keys file does not
    from tools.command import load_operator_keys

    assert provision(tmp_path) == 0
    config = json.loads((tmp_path / "node" / "config.json").read_text())
    op_keys, counters = load_operator_keys(tmp_path / "operator-keys.toml")
    assert bytes.fromhex(config["command_key"]) == op_keys["sew-07"] and len(op_keys["sew-07"]) == 32
    assert config["cmd_floor"] == counters["sew-07"] > 1_700_000_000  # commands signed before it are refused
    assert op_keys["sew-07"].hex() not in (tmp_path / "keys.toml").read_text()
    assert mode(tmp_path / "operator-keys.toml") == 0o600
    assert provision(tmp_path, "--force", "--operator-keys", str(tmp_path / "keys.toml")) == 2  # never the same file


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


def test_a_replaced_key_is_versioned_and_the_old_one_kept_until_dropped(tmp_path, capsys):
    # SPEC.md 4.5: --force puts the key one version up and keeps the replaced one as previous_key
    # (the node's buffered frames still verify); a second --force drops the oldest;
    # --drop-old-key keeps none (a leaked key): the node then discards those frames, counted
    assert provision(tmp_path) == 0
    first = load_keys(tmp_path / "keys.toml")
    assert first.versions == {} and "key_version" not in json.loads((tmp_path / "node" / "config.json").read_text())
    assert provision(tmp_path, "--force") == 0
    assert "key version 1 (version 0 kept as previous_key" in capsys.readouterr().out
    second = load_keys(tmp_path / "keys.toml")
    assert second.versions["sew-07"] == {1: second["sew-07"], 0: first["sew-07"]}
    config = json.loads((tmp_path / "node" / "config.json").read_text())
    assert (config["key"], config["key_version"]) == (second["sew-07"].hex(), 1)
    assert provision(tmp_path, "--force") == 0
    third = load_keys(tmp_path / "keys.toml")
    assert third.versions["sew-07"] == {2: third["sew-07"], 1: second["sew-07"]}
    assert provision(tmp_path, "--force", "--drop-old-key") == 0
    assert "no previous key kept" in capsys.readouterr().out
    fourth = load_keys(tmp_path / "keys.toml")
    assert fourth.versions["sew-07"] == {3: fourth["sew-07"]} and fourth.version("sew-07") == 3
    assert "previous_key" not in (tmp_path / "keys.toml").read_text()
    assert json.loads((tmp_path / "node" / "config.json").read_text())["key_version"] == 3


def test_udp_link_validation(tmp_path, capsys):
    # a wrong option value is exit 2 (docs/technician.md, exit codes)
    assert provision(tmp_path, "--link", "udp", "--board", "esp32") == 2
    assert "--gateway" in capsys.readouterr().err
    assert provision(tmp_path, "--gateway", "10.0.0.2:5683", "--board", "esp32") == 2
    assert "--wifi-ssid" in capsys.readouterr().err
    assert provision(tmp_path, "--gateway", "10.0.0.2:99999", "--board", "linux") == 2
    assert "port 99999 is not 1..65535" in capsys.readouterr().err
    assert provision(tmp_path, "--gateway", "10.0.0.2", "--board", "linux") == 2
    assert "HOST:PORT" in capsys.readouterr().err
    assert provision(tmp_path, "--gateway", "10.0.0.2:5683", "--wifi-ssid", "city", "--board", "rp2") == 0
    link = json.loads((tmp_path / "node" / "config.json").read_text())["link"]
    assert link == {"kind": "udp", "host": "10.0.0.2", "port": 5683, "wifi_ssid": "city", "wifi_password": ""}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.toml", "node", "operator-keys.toml"]  # no temp file


@pytest.mark.parametrize(("extra", "words"), [
    (["--link", "uart", "--wifi-ssid", "city"], "--wifi-ssid is for --link udp on esp32 or rp2; a uart node talks"),
    (["--wifi-password", "secret"], "--wifi-password is for --link udp on esp32 or rp2; a uart node talks"),
    (["--board", "rpi", "--gateway", "10.0.0.2:5683", "--wifi-ssid", "city"],
     "--wifi-ssid is for --link udp on esp32 or rp2; board rpi sends over the network of the machine it runs on"),
    (["--board", "linux", "--link", "uart", "--gateway", "10.0.0.2:5683"], "--gateway is for --link udp; a uart"),
])
def test_wifi_options_a_node_would_not_use_are_refused(tmp_path, capsys, extra, words):
    # on main a uart node (or a Pi on its own network) was provisioned without a word and the
    # Wi-Fi settings were dropped: exit 2, one line, nothing written, and never the password
    assert provision(tmp_path, *extra) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "secret" not in err, err
    assert not (tmp_path / "node").exists() and not (tmp_path / "keys.toml").exists()


def test_bad_node_id_and_broken_keys_file(tmp_path, capsys):
    for node in ("a/b", "Sew(8)", "_probe", "sew@07", "temp 1"):  # the last three were accepted once
        assert provision(tmp_path, node=node) == 2
        err = capsys.readouterr().err
        assert f"node id {node!r}" in err and "letter or digit" in err and err.count("\n") == 1, err
    assert not (tmp_path / "keys.toml").exists()
    (tmp_path / "keys.toml").write_text("[nodes\n")
    assert provision(tmp_path) == 2
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



@pytest.mark.parametrize("node", ['a"b', "a\\b", "a b", "-ab", "_x", "a/b", "a+b", "é", "a" * 33, "a\x08"])
def test_ids_outside_the_senml_rule_are_refused_and_the_keys_file_stays_valid(tmp_path, capsys, node):
    # RFC 8428 4.5.1 (protocol/names.py): a letter or digit, then letters, digits and - : . _
    assert provision(tmp_path, node="ok-1", out="ok") == 0
    before = (tmp_path / "keys.toml").read_bytes()
    assert provision(tmp_path, node=node, out="bad") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "node id" in err and "letter or digit" in err and "Traceback" not in err
    assert (tmp_path / "keys.toml").read_bytes() == before
    assert set(load_keys(tmp_path / "keys.toml")) == {"ok-1"}
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("node", ["a:b", "x.y_z", "7", "A-b.c:d_e"])
def test_every_allowed_id_round_trips_through_the_keys_file(tmp_path, node):
    assert provision(tmp_path, node=node) == 0
    assert list(load_keys(tmp_path / "keys.toml")) == [node]
    assert json.loads((tmp_path / "node" / "config.json").read_text())["node"] == node


def test_keys_file_escaping_reads_back_any_id():
    # format_keys quotes and escapes what is not a bare TOML key (older keys files may hold such ids)
    import tomllib

    from gateway.keys import format_keys

    ids = ['a"b', "a\\b", "x.y", "a:b", "a\x01b", "sew-07", "é"]
    assert sorted(tomllib.loads(format_keys({i: bytes(16) for i in ids}))["nodes"]) == sorted(ids)


def test_a_failed_provision_leaves_nothing_behind(tmp_path, capsys):
    # no folder for the keys file: refused before anything is made, so a retry needs no --force
    rc = cli.main(["provision", "--node", "sew-08", "--out", str(tmp_path / "n8" / "x"),
                   "--keys", str(tmp_path / "nonexistent" / "k.toml")])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "n8").exists()
    assert cli.main(["provision", "--node", "sew-08", "--out", str(tmp_path / "n8" / "x"),
                     "--keys", str(tmp_path / "k.toml")]) == 0


@pytest.mark.parametrize("link", [[], ["--link", "lora", "--board", "rp2"]])
def test_a_keys_write_that_fails_rolls_the_node_folder_back(tmp_path, capsys, monkeypatch, link):
    # the disk fills between the node's config and the keys file: the config and the folders
    # made for it go, the keys file is untouched, and no temporary file stays (a LoRa node alike)
    from gateway import files
    from tools import provision as prov

    assert provision(tmp_path, node="first", out="first") == 0
    before = (tmp_path / "keys.toml").read_bytes()
    real = files.write_private

    def full_disk_on_keys(path, text):
        if str(path).endswith("keys.toml"):
            real(str(path) + ".probe", "")  # a temporary file is made and must not stay
            raise OSError(28, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(prov, "write_private", full_disk_on_keys)
    capsys.readouterr()
    assert provision(tmp_path, *link, out="new/sub") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "nothing was changed" in err
    assert not (tmp_path / "new").exists()
    assert (tmp_path / "keys.toml").read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
