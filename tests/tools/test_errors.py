# Errors (issue 20 item 4): one root error per package, every error class under it, and one
# map in tools/cli.py from those roots and their kinds of wrong input to the exit codes of
# docs/technician.md (1 failed, 2 wrong input, 130 Ctrl-C, 70 a bug, 78 an install that does not fit). The commands' own
# mistakes are in test_cli_mistakes.py; this is the map itself, and the classes it relies on.
import ast
import importlib
import pathlib

import pytest

import firmware
import gateway
import protocol
from tools import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROOTS = {"protocol": protocol.FrameError, "firmware": firmware.FirmwareError, "gateway": gateway.GatewayError,
         "tools": cli.CliError}
# not errors: signals that unwind a simulated board, or a fault the sampler counts with the bus's
SIGNALS = {"PowerCut": "the simulated power cut: a BaseException no `except Exception` in the node may catch",
           "BME280Error": "an OSError: the sampler counts it like any other I2C fault of the bus",
           "_Terminate": "the publisher process's own stop signal, never raised out of it",
           "_Stopped": "citynode node's SIGTERM unwinding the node's loop, caught in its run()"}


def _error(module, name, *args):
    return getattr(importlib.import_module(module), name)(*args)


@pytest.mark.parametrize("module, name, args, code", [
    ("tools.cli", "CliError", ("x",), 1),
    ("tools.cli", "UsageError", ("x",), 2),
    ("tools.flash", "FlashError", ("no chip answered",), 1),
    ("tools.upload", "UploadError", ("upload mismatch",), 1),
    ("tools.simulate", "SimulateError", ("--nodes must be at least 1",), 2),
    ("tools.rig.pico", "RigMissing", ("no Pico images",), 2),
    ("tools.natscluster", "ClusterError", ("no leader",), 1),
    ("tools.lora_packages", "LoraDriversMissing", ("no driver",), 1),
    ("tools.nodeconfig", "ConfigError", ("interval must be 1..86400 seconds",), 2),
    ("firmware.config", "ConfigError", ("config: key must be hex",), 2),
    ("firmware", "FirmwareError", ("x",), 1),
    ("gateway", "GatewayError", ("cannot start",), 1),
    ("gateway.config", "ConfigError", ("[mqtt] url: ...",), 2),
    ("gateway.keys", "KeysError", ("no such keys file",), 2),
    ("gateway.web.server", "WebConfigError", ("web.listen: not loopback",), 2),
    ("gateway.downlink", "CommandError", ("not JSON",), 2),
    ("gateway.store", "StoreError", ("full", "disk full"), 1),
    ("gateway.daemon", "DataDirInUse", ("data_dir is in use",), 1),
    ("gateway", "InstallError", ("an install that does not fit",), 78),
    ("gateway.paho_adapter", "PahoIncompatible", ("the installed paho-mqtt does not fit ...",), 78),
    ("protocol", "FrameError", ("mac",), 1),
    ("builtins", "OSError", (2, "No such file or directory"), 1),
    ("builtins", "KeyboardInterrupt", (), 130),
    ("builtins", "RuntimeError", ("a bug",), 70),
    ("builtins", "ValueError", ("a bug",), 70),
    ("builtins", "KeyError", ("a bug",), 70),
])
def test_the_one_map_from_errors_to_exit_codes(module, name, args, code):
    e = _error(module, name, *args)
    assert cli.exit_code(e) == code
    line = cli.error_line(e, code)
    assert "\n" not in line and line
    if code == 70:
        assert line.startswith(f"internal error: {name}") and "CITYNODE_DEBUG=1" in line


def test_the_three_config_errors_are_two_and_each_under_its_root():
    from gateway import config as gateway_config
    from tools import nodeconfig

    # a node config (provision, flash, rig, the node itself) is one error: the firmware's
    assert nodeconfig.ConfigError is firmware.config.ConfigError
    assert issubclass(firmware.config.ConfigError, firmware.FirmwareError)
    assert issubclass(gateway_config.ConfigError, gateway.InputError)


def _error_classes():
    # (package, module, class name) of every class in gateway/, tools/ and firmware/ whose
    # bases name an exception (by the name's ending, or a builtin exception)
    builtin = {n for n in dir(__builtins__ if isinstance(__builtins__, dict) else __builtins__)}
    for package in ("firmware", "gateway", "tools"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in tree.body:
                if not isinstance(node, ast.ClassDef):
                    continue
                names = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
                         for b in node.bases]
                if any(n.endswith(("Error", "Exception", "Missing", "Exit", "Interrupt")) or n in ROOTS
                       or (n in builtin and n[0].isupper()) for n in names):
                    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                    yield package, module, node.name


def test_every_error_class_is_under_its_packages_root():
    found = list(_error_classes())
    assert len(found) >= 15, found  # the reader sees them (FlashError, ConfigError, StoreError, ...)
    stray = []
    for package, module, name in found:
        if name in SIGNALS or name in ("FirmwareError", "GatewayError", "CliError"):
            continue
        cls = getattr(importlib.import_module(module), name)
        if issubclass(cls, BaseException) and not issubclass(cls, ROOTS[package]):
            stray.append(f"{module}.{name} is not a {ROOTS[package].__name__}")
    assert not stray, "\n".join(stray)
