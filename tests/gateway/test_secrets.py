# Secrets stay secret: a url's password is masked in --check-config output, config errors and
# the real gateway's log; a keys file, TLS key or config with a password that group or others
# may read is refused at start (exit 2, one line); a password over plain mqtt:// or http:// to
# a host off the box, or a token served on the network without TLS, warns in one line.
import logging
import os
import time
import urllib.request

import pytest

from gateway import config
from tests.gateway.conftest import GatewayProcess, check_config, write_config
from tests.support.broker import free_port
from tests.support.udpnode import UdpNode

PASSWORD = "s3cr3t-pw-9f2"
TOKEN = "tok-7d1c5a9e-secret"


def check(path):
    return check_config(path)


def with_url(tmp_path, url, **kw):
    path = write_config(tmp_path, "mqtt://127.0.0.1:1883", **kw)
    path.write_text(path.read_text().replace('url = "mqtt://127.0.0.1:1883"', f'url = "{url}"'))
    return path


def test_check_config_masks_the_url_password(tmp_path, capsys):
    path = with_url(tmp_path, f"mqtt://alice:{PASSWORD}@127.0.0.1:1883")
    assert check(path) == 0
    out, err = capsys.readouterr()
    assert "mqtt mqtt://alice:***@127.0.0.1:1883)" in out, out
    assert PASSWORD not in out + err and not err  # loopback: no plain-text warning
    s = config.load(path)
    assert s.mqtt.password == PASSWORD and s.mqtt.username == "alice"  # still used to log in
    assert PASSWORD not in repr(s)


def test_config_error_masks_the_url_password(tmp_path, capsys):
    path = with_url(tmp_path, f"mqtt://alice:{PASSWORD}@127.0.0.1:99999")
    assert check(path) == 2
    err = capsys.readouterr().err
    assert "[mqtt] url: bad port in 'mqtt://alice:***@127.0.0.1:99999'" in err and PASSWORD not in err, err


def test_redact_url_in_any_text():
    assert config.redact_url("mqtt://u:p@h:1") == "mqtt://u:***@h:1"
    assert config.redact_url("see https://u:p:q@h/x?y=1 and http://h/a@b") == "see https://u:***@h/x?y=1 and http://h/a@b"
    assert config.redact_url("mqtt://user@host") == "mqtt://user@host"  # no password: nothing to hide


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_keys_file_open_to_others_is_refused(tmp_path, capsys, mode):
    path = write_config(tmp_path, "mqtt://127.0.0.1:1883")
    os.chmod(tmp_path / "keys.toml", mode)
    assert check(path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"[nodes] keys_file {tmp_path / 'keys.toml'} is mode {mode:04o}" in err
    assert f"chmod 600 {tmp_path / 'keys.toml'}" in err


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_sighup_keeps_the_old_keys_when_the_keys_file_is_open_to_others(tmp_path, caplog):
    from gateway.daemon import Gateway

    path = write_config(tmp_path, "mqtt://127.0.0.1:1883")
    gw = Gateway(config.load(path))
    before = dict(gw.keys)
    os.chmod(tmp_path / "keys.toml", 0o644)
    with caplog.at_level(logging.ERROR):
        assert gw.reload_keys() is False
    assert gw.keys == before and "keys not reloaded" in caplog.text and "mode 0644" in caplog.text


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_config_with_a_password_open_to_others_is_refused(tmp_path, capsys):
    path = with_url(tmp_path, "mqtt://127.0.0.1:1883", mqtt_extra=f'username = "alice"\npassword = "{PASSWORD}"')
    os.chmod(path, 0o644)
    assert check(path) == 2
    err = capsys.readouterr().err
    assert "the config file (it holds a password or token)" in err and "0644" in err and PASSWORD not in err
    path.write_text(path.read_text().replace(f'password = "{PASSWORD}"', "").replace('username = "alice"', ""))
    assert check(path) == 0  # no secret in it: 0644 is fine
    capsys.readouterr()
    os.chmod(path, 0o600)
    path.write_text(path.read_text() + f'\n[web]\nlisten = "127.0.0.1:0"\ntoken = "{TOKEN}"\n')
    os.chmod(path, 0o660)
    assert check(path) == 2 and "0660" in capsys.readouterr().err


def test_password_in_plain_text_off_the_box_warns(tmp_path, capsys):
    path = with_url(tmp_path, f"mqtt://alice:{PASSWORD}@broker.city.example:1883")
    assert check(path) == 0
    out, err = capsys.readouterr()
    assert err == ("citynode gateway: warning: [mqtt] url: the password goes in plain text over mqtt:// to "
                   "broker.city.example; use mqtts:// (TLS)\n"), err
    path = with_url(tmp_path, "mqtt://10.1.2.3:1883", mqtt_extra=f'username = "a"\npassword = "{PASSWORD}"')
    assert check(path) == 0 and "plain text over mqtt:// to 10.1.2.3" in capsys.readouterr().err
    path = with_url(tmp_path, "mqtt://broker.city.example:1883")  # no password: nothing to warn about
    assert check(path) == 0 and capsys.readouterr().err == ""
    path = with_url(tmp_path, "mqtt://[::1]:1883", mqtt_extra=f'username = "a"\npassword = "{PASSWORD}"')
    assert check(path) == 0 and capsys.readouterr().err == ""
    nats = 'servers = ["nats://nats.city.example:4222", "nats://127.0.0.1:4222"]\n'
    path = write_config(tmp_path, "mqtt://127.0.0.1:1883", nats=nats + f'token = "{TOKEN}"')
    assert check(path) == 0
    assert capsys.readouterr().err == ("citynode gateway: warning: [nats] servers: the password or token goes in "
                                       "plain text over nats:// to nats.city.example; use tls://\n")
    path = write_config(tmp_path, "mqtt://127.0.0.1:1883", nats=nats)  # no login: nothing to warn about
    assert check(path) == 0 and capsys.readouterr().err == ""
    path = write_config(tmp_path, "mqtt://127.0.0.1:1883", web=f'listen = "0.0.0.0:8080"\ntoken = "{TOKEN}"')
    assert check(path) == 0
    err = capsys.readouterr().err
    assert "[web] listen: the token and session cookie go in plain text over http://" in err and TOKEN not in err


def test_log_filter_masks_secrets():
    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, "login %s to %s failed", (PASSWORD,
                            f"http://u:{PASSWORD}@h/"), None)
    config.RedactSecrets([PASSWORD, "ab"]).filter(rec)
    assert rec.getMessage() == "login *** to http://u:***@h/ failed"


@pytest.mark.integration
def test_real_gateway_log_has_no_secret(tmp_path, mosquitto):
    # The real process: connect with a password in the url, serve the page with a token (used
    # in a url once), lose the broker. Neither secret reaches the log (the journal).
    web = free_port()
    udp = free_port()
    path = write_config(tmp_path / "gw", mosquitto.url.replace("mqtt://", f"mqtt://alice:{PASSWORD}@"),
                        udp=f"127.0.0.1:{udp}", web=f'listen = "127.0.0.1:{web}"\ntoken = "{TOKEN}"')
    gwp = GatewayProcess(path).start(wait_port=udp)
    try:
        deadline = time.monotonic() + 20
        while "mqtt: connected" not in gwp.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert UdpNode("sew-01", bytes(range(16)), ("127.0.0.1", udp)).run(3, deadline_s=10)
        for target in (f"/?token={TOKEN}", f"/nope?token={TOKEN}", "/metrics"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{web}{target}", timeout=5).read()
            except urllib.error.HTTPError:
                pass
        mosquitto.stop()
        deadline = time.monotonic() + 10
        while "lost" not in gwp.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gwp.terminate()
    log = gwp.log.read_text()
    assert f"mqtt: connected to mqtt://alice:***@127.0.0.1:{mosquitto.port}" in log, log[-2000:]
    assert "lost" in log and PASSWORD not in log and TOKEN not in log, log[-2000:]
