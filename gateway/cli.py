# `citynode gateway --config gateway.toml`: run until SIGTERM/SIGINT (SIGHUP reloads the
# keys file). `citynode gateway --check-config FILE` only validates. A bad config raises
# ConfigError (an InputError: one line on stderr naming the key, exit code 2), a gateway that
# cannot start GatewayError (exit 1), or InstallError when the installed software does not fit
# (a paho-mqtt the adapter was not written for: exit 78, which the systemd unit does not
# restart on); tools/cli.py maps them.
import argparse
import logging
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from typing import Any

from gateway import GatewayError, InstallError, config
from gateway.keys import Keys, KeysError, load_keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="the gateway's TOML config (see deploy/gateway.toml)")
    parser.add_argument("--check-config", metavar="FILE", help="validate FILE and its keys file, then exit")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="overrides [gateway] log_level")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def load(path: str, role: str = "gateway") -> tuple[config.Settings, Keys]:
    # -> (settings, keys); raises ConfigError with the one line to show (role "relay": relay.toml)
    try:
        return _load(path, role)
    except config.ConfigError as e:
        raise config.ConfigError(f"config error: {e}") from None


def _load(path: str, role: str) -> tuple[config.Settings, Keys]:
    settings = config.load(path, role)
    try:
        config.check_private_files(settings)
    except config.ConfigError as e:
        raise config.ConfigError(f"{path}: {e}") from None
    try:
        keys = load_keys(settings.keys_file)
    except KeysError as e:
        raise config.ConfigError(f"{path}: [nodes] keys_file: {e}") from None
    try:
        config.check_mappings(settings, keys)
    except config.ConfigError as e:
        raise config.ConfigError(f"{path}: {e}") from None
    return settings, keys


def cannot_start(e: Exception) -> GatewayError:
    # the one line of a gateway or relay whose start failed: exit 1 (systemd restarts it: a port
    # still taken, a disk not mounted yet), or exit 78 for an install that does not fit
    return (InstallError if isinstance(e, InstallError) else GatewayError)(f"cannot start: {e}")


def start_logging(settings: config.Settings, level: str | None) -> None:
    # the daemon's log lines on stderr (the journal), at --log-level or the config's level;
    # the journal never sees a password or the web token
    logging.basicConfig(level=(level or settings.log_level).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(config.RedactSecrets(config.secrets_of(settings)))


def run(args: argparse.Namespace) -> int:
    path = args.check_config or args.config
    if not path:
        raise config.ConfigError("give --config FILE (or --check-config FILE)")
    settings, keys = load(path)
    warnings = config.plaintext_warnings(settings)
    if args.check_config:
        for line in warnings:
            print(f"citynode gateway: warning: {line}", file=sys.stderr)
        st = ""
        if settings.sensorthings:
            server = settings.sensorthings_server
            st = (f", {plural(len(settings.sensorthings), 'SensorThings mapping')} to "
                  f"{server.url if server else 'the mqtt broker'}")
        up = [f"mqtt {settings.mqtt.url}"] if settings.mqtt is not None else []
        if settings.nats is not None:
            up.append(f"nats stream {settings.nats.stream} on {len(settings.nats.servers)} servers")
        print(f"{path}: ok ({plural(len(keys), 'node key')}, {plural(len(settings.ingest), 'ingest link')}, "
              f"{', '.join(up)}{st})")
        return 0
    start_logging(settings, args.log_level)
    for line in warnings:
        logging.getLogger("citynode.gateway").warning("%s", line)
    from gateway.daemon import Gateway  # after validation: --check-config stays light

    gw = Gateway(settings, keys)
    stop = threading.Event()
    hup = threading.Event()
    wake = threading.Event()  # set by every handler: the main thread sleeps until a signal comes

    def handler(flag: threading.Event) -> Callable[..., None]:
        def on_signal(*_: Any) -> None:
            flag.set()
            wake.set()
        return on_signal

    signal.signal(signal.SIGTERM, handler(stop))
    signal.signal(signal.SIGINT, handler(stop))
    signal.signal(signal.SIGHUP, handler(hup))
    try:
        gw.start()
    except (OSError, sqlite3.Error, ValueError, GatewayError) as e:
        raise cannot_start(e) from None
    while not stop.is_set():
        wake.wait(5.0)  # a signal handler runs (and sets wake) while this waits: no polling
        wake.clear()
        if hup.is_set():
            hup.clear()
            gw.reload_keys()
    gw.stop()
    return 0
