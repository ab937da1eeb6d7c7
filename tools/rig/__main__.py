# python -m tools.rig ... is `citynode rig ...` (see tools/rig/cli.py)
import argparse
import sys
from collections.abc import Sequence

from tools.rig import cli


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.rig", description="a virtual citynode board on a pty")
    cli.add_arguments(p)
    return cli.run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
