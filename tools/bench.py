# `citynode bench [protocol|firmware|gateway ...]`: run the benchmark scripts in bench/
# (each prints its own figures and ratios measured in the same run). They live in the
# source checkout, not in an installed package.
import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
NAMES = ("protocol", "firmware", "gateway")


def add_arguments(p):
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"benchmarks to run: {', '.join(NAMES)} (default: all)")


def run(args):
    names = args.names or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        print(f"citynode bench: no benchmark {unknown[0]!r}; choose from {', '.join(NAMES)}", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        script = BENCH / f"{name}_bench.py"
        if not script.exists():
            print(f"citynode bench: {script} not found (benchmarks run from a source checkout)", file=sys.stderr)
            return 2
        print(f"== {name} ({script.relative_to(BENCH.parent)})", flush=True)
        status = subprocess.call([sys.executable, str(script)]) or status
    return status
