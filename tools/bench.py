# `citynode bench [protocol|firmware|gateway ...]`: run the benchmark scripts in bench/
# (each prints its own figures and ratios measured in the same run). They live in the
# source checkout, not in an installed package.
import argparse
import pathlib
import subprocess
import sys

from tools.cli import UsageError

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
# every bench/<name>_bench.py is a benchmark; this order first, then the rest by name
ORDER = ("protocol", "firmware", "gateway")


def names() -> list[str]:
    found = sorted(f.name[:-len("_bench.py")] for f in BENCH.glob("*_bench.py"))
    return [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"benchmarks to run: {', '.join(names())} (default: all)")


def run(args: argparse.Namespace) -> int:
    known = names()
    chosen = args.names or known
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise UsageError(f"no benchmark {unknown[0]!r}; choose from {', '.join(known)}")
    status = 0
    for name in chosen:
        script = BENCH / f"{name}_bench.py"
        if not script.exists():
            raise UsageError(f"{script} not found (benchmarks run from a source checkout)")
        print(f"== {name} ({script.relative_to(BENCH.parent)})", flush=True)
        status = subprocess.call([sys.executable, str(script)]) or status
    return status
