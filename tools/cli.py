# `citynode` entry point. Each subcommand lives in its own module with
#   add_arguments(parser) and run(args) -> exit code;
# this registry names them (a new subcommand is one module and one line here).
import argparse
import importlib
import sys

COMMANDS = {
    "decode": ("tools.decode", "print a frame in CBOR diagnostic notation and as readings"),
    "gateway": ("gateway.cli", "run the gateway daemon"),
    "simulate": ("tools.simulate", "run simulated nodes with the real firmware code"),
    "provision": ("tools.provision", "make a node key and config, add it to the gateway keys file"),
    "flash": ("tools.flash", "flash MicroPython and upload the firmware to a board"),
    "monitor": ("tools.monitor", "decode frames and console lines from a port or UDP live"),
    "demo": ("tools.demo", "simulated nodes, gateway and an embedded broker in one command"),
    "bench": ("tools.bench", "run the benchmarks"),
    "rig": ("tools.rig.cli", "a virtual board on a pty (the HIL tests' virtual rig)"),
}


def load_keys_option(path, prog):
    # The --keys FILE of a technician command: the keys, or None after one line on stderr.
    from gateway.keys import KeysError, load_keys

    try:
        return load_keys(path)
    except KeysError as e:
        print(f"citynode {prog}: {e}", file=sys.stderr)
        return None


def build_parser(available):
    parser = argparse.ArgumentParser(prog="citynode", description="citynode technician tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        mod = available.get(name)
        if mod is None:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
    return parser


def _load(name):
    module, _ = COMMANDS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module or module.startswith(e.name + ".")):
            return None  # not built yet
        raise


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # import only the named subcommand (fast start); all of them for --help
    wanted = [a for a in argv if a in COMMANDS][:1] or list(COMMANDS)
    available = {name: _load(name) for name in wanted}
    parser = build_parser(available)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return available[args.command].run(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
