# Opening a board's serial port for a technician command (flash, monitor): exclusively, and
# with one clear line when that fails. "Busy" is found two ways: pyserial's exclusive open
# (flock, which `citynode monitor` and `citynode flash` both take) and, for programs that
# open a port without a lock (screen, minicom, a gateway, mpremote), the other processes
# on this machine that hold it open (/proc/<pid>/fd, like fuser(1)).
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tools.cli import CliError

if TYPE_CHECKING:
    import serial


def holders(port: str) -> list[tuple[int, str]]:
    # -> [(pid, command name)] of other processes that have `port` open (those we may look at)
    try:
        target = os.path.realpath(port)
        st = os.stat(target)
    except OSError:
        return []
    found = []
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        if pid == me:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != target:
                    continue
                s = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if s.st_rdev == st.st_rdev:
                found.append((pid, _comm(pid)))
                break
    return found


def _comm(pid: int | str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    # `python .../citynode monitor ...` reads better as "citynode monitor"
    for i, a in enumerate(argv):
        if a.endswith("citynode") or a == "tools.cli":
            return " ".join(["citynode", *argv[i + 1:i + 2]])
    return os.path.basename(argv[0]) if argv else "?"


def busy_error(port: str, who: Iterable[tuple[int, str]] = ()) -> CliError:
    by = ", ".join(f"{name} (pid {pid})" for pid, name in who) or \
        "another program (citynode monitor, the gateway, mpremote, a terminal)"
    return CliError(f"port {port} is busy: {by} has it open; close that and retry")


def open_exclusive(port: str, baudrate: int = 115200, timeout: float = 0.05,
                   check_holders: bool = True) -> serial.Serial:
    # -> an open serial.Serial that no other citynode command can open meanwhile; CliError otherwise
    import serial

    try:
        ser = serial.Serial(port, baudrate, timeout=timeout, exclusive=True)
    except serial.SerialException as e:
        errno = getattr(e, "errno", None)
        text = str(e)
        if errno == 2 or "Errno 2]" in text:
            raise CliError(f"no such port {port}: is the board plugged in? (ls /dev/ttyUSB* /dev/ttyACM*)") from None
        if errno == 13 or "Errno 13]" in text:
            raise CliError(f"no permission to open {port}: add yourself to the dialout group, log in again") \
                from None
        if errno in (11, 16) or "Errno 11]" in text or "Errno 16]" in text or "exclusive" in text.lower():
            raise busy_error(port, holders(port)) from None
        raise CliError(f"cannot open {port}: {text}") from None
    if check_holders:
        who = holders(port)
        if who:
            ser.close()
            raise busy_error(port, who)
    return ser
