# `citynode` entry point. Each subcommand lives in its own module with
#   add_arguments(parser) and run(args) -> exit code;
# this registry names them (a new subcommand is one module and one line here).
#
# Every error a user can cause ends as ONE line on stderr, "citynode <command>: <what>",
# and one of the exit codes below (docs/technician.md lists them), never a traceback:
# a subcommand raises its error (CliError or UsageError here, or another package's root error,
# docs/architecture.md "Errors") and exit_code() below, the one map from errors to codes,
# picks the code; argparse errors, Ctrl-C and anything unexpected become such a line too.
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

if TYPE_CHECKING:
    from gateway.keys import Keys

import argparse
import importlib
import os
import sys


class Command(NamedTuple):
    module: str  # the subcommand's module: add_arguments(parser) and run(args)
    summary: str  # its line in citynode --help


COMMANDS = {
    "decode": Command("tools.decode", "print a frame in CBOR diagnostic notation and as readings"),
    "gateway": Command("gateway.cli", "run the gateway daemon"),
    "node": Command("tools.node", "run the Raspberry Pi node (CPython, under systemd: deploy/citynode-node.service)"),
    "relay": Command("gateway.relay", "consume the city's JetStream stream once and feed the MQTT outputs"),
    "simulate": Command("tools.simulate", "run simulated nodes with the real firmware code"),
    "provision": Command("tools.provision", "make a node key and config, add it to the gateway keys file"),
    "command": Command("tools.command", "sign a command for a node with the operator keys and send it"),
    "flash": Command("tools.flash", "flash MicroPython and upload the firmware to a board"),
    "monitor": Command("tools.monitor", "decode frames and console lines from a port or UDP live"),
    "demo": Command("tools.demo", "simulated nodes, gateway and an embedded broker in one command"),
    "bench": Command("tools.bench", "run the benchmarks"),
    "rig": Command("tools.rig.cli", "a virtual board on a pty (the HIL tests' virtual rig)"),
}

# exit codes (docs/technician.md, "Exit codes")
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and failed: port, board, network, a file it could not write, a refusal
EXIT_USAGE = 2  # what was given is wrong: an option, a value, an input file (nothing was changed)
EXIT_BUG = 70  # an unexpected error inside citynode (EX_SOFTWARE); CITYNODE_DEBUG=1 shows the traceback
EXIT_INSTALL = 78  # the installed software does not fit (EX_CONFIG): a restart never fixes it (systemd units)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class CliError(Exception):
    # The tools' root error: raise CliError("what went wrong; what to do") from a subcommand
    # when the command ran and failed (exit 1)
    pass


class UsageError(CliError):
    # what was given is wrong: an option, a value, an input file; nothing was changed (exit 2)
    pass


def exit_code(e: BaseException) -> int:
    # The one map from the error that ended a command to its documented exit code: each
    # package's root error (protocol FrameError, firmware FirmwareError, gateway GatewayError,
    # tools CliError) fails with 1, their kinds of wrong input with 2, an install that does not
    # fit (gateway InstallError) with 78; anything else is a bug.
    from firmware import FirmwareError
    from firmware.config import ConfigError as NodeConfigError
    from gateway import GatewayError, InputError, InstallError
    from protocol import FrameError

    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(e, UsageError | InputError | NodeConfigError):  # a node config, gateway.toml, a keys file
        return EXIT_USAGE
    if isinstance(e, InstallError):  # a paho-mqtt the adapter was not written for
        return EXIT_INSTALL
    if isinstance(e, CliError | GatewayError | FirmwareError | FrameError | OSError):
        return EXIT_FAILED
    return EXIT_BUG


def error_line(e: BaseException, code: int) -> str:
    # what the user reads after "citynode <command>: "
    if isinstance(e, KeyboardInterrupt):
        return str(e) or "interrupted (Ctrl-C)"
    if code == EXIT_BUG:
        return f"internal error: {type(e).__name__}: {e} (a bug; CITYNODE_DEBUG=1 shows the traceback)"
    if isinstance(e, OSError):
        return os_error_text(e)
    return str(e)


class Parser(argparse.ArgumentParser):
    # argparse prints the whole usage before its error; one line with a pointer to --help instead
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def hostport(text: str, what: str = "", lowest: int = 1) -> tuple[str, int]:
    # "HOST:PORT" -> (host, port) with the port lowest..65535 (0: any free port, for a listener
    # that says where it ended up); ValueError with one line, naming the option `what`, otherwise
    from gateway.config import split_hostport  # the one HOST:PORT rule

    try:
        return split_hostport(text, lowest)
    except ValueError as e:
        raise ValueError(f"{what} {e}" if what else str(e)) from None


def hostport_arg(text: str, lowest: int = 1) -> str:
    # argparse type= for HOST:PORT options: the value is kept as given, checked here
    try:
        hostport(text, lowest=lowest)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def positive(kind: Callable[[str], Any], below: float | None = None) -> Callable[[str], Any]:
    # argparse type= for a count or a duration: kind(text) above 0 (and below `below`)
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0 or (below is not None and not value < below):
            raise argparse.ArgumentTypeError(f"must be more than 0{f' and below {below:g}' if below else ''} "
                                             f"(got {text})")
        return value

    return parse


def load_keys_option(path: str) -> Keys:
    # The --keys FILE of a technician command; a missing or broken file raises KeysError
    # (the gateway's wrong input: exit 2)
    from gateway.keys import load_keys

    return load_keys(path)


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("citynode")
    except Exception:  # noqa: BLE001 - a source tree without an installed distribution
        from gateway import __version__

        return __version__


def build_parser(available: Mapping[str, ModuleType | None]) -> argparse.ArgumentParser:
    parser = Parser(prog="citynode", description="citynode technician tools")
    parser.add_argument("--version", action="version", version=f"citynode {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        mod = available.get(name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=command.summary, description=command.summary)
        mod.add_arguments(p)
    return parser


def _load(name: str) -> ModuleType | None:
    module = COMMANDS[name].module
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module or module.startswith(e.name + ".")):
            return None  # not built yet
        raise


def _say(command: str | None, text: str) -> None:
    print(f"citynode{' ' + command if command else ''}: {text}", file=sys.stderr, flush=True)


def os_error_text(e: OSError) -> str:
    # an OSError as the user should read it: what, and on which file or address
    import socket

    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host name ({e.strerror or e})"
    what = e.strerror or str(e) or type(e).__name__
    return f"{e.filename}: {what}" if e.filename else what


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # import only the named subcommand (fast start); all of them for --help
    wanted = [a for a in argv if a in COMMANDS][:1] or list(COMMANDS)
    command = wanted[0] if len(wanted) == 1 else None
    try:
        available = {name: _load(name) for name in wanted}
        parser = build_parser(available)
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, --version, or an argparse error (already one line)
            return e.code if isinstance(e.code, int) else EXIT_USAGE
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        command = args.command
        module = available[command]
        assert module is not None  # argparse offers only the commands that loaded (build_parser)
        return module.run(args) or EXIT_OK
    except BrokenPipeError:  # `citynode monitor ... | head`: the reader went away
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return EXIT_FAILED
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - a bug too: still one line, and how to see more
        code = exit_code(e)
        if code == EXIT_BUG and os.environ.get("CITYNODE_DEBUG"):
            raise
        _say(command, error_line(e, code))
        return code


if __name__ == "__main__":
    # `python -m tools.cli`: run the imported module's main, so that subcommands raise the same
    # CliError class that main catches (this file as __main__ would be a second copy)
    from tools.cli import main as _main

    sys.exit(_main())
