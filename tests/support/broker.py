# A real mosquitto broker on a free loopback port, for integration tests.
import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import time

from tools import procs


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary():
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.path.exists(cand):
            return cand
    raise RuntimeError("mosquitto is not installed: apt-get install -y mosquitto (.ci/run does this)")


class Mosquitto:
    # Start/stop/restart one broker on a fixed port; persistence on so a restart keeps sessions.
    def __init__(self, workdir, port=None, extra_conf=""):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc = None
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def conf(self):
        # max_queued_messages 0: Debian's default of 1000 silently drops messages queued
        # for an offline persistent subscriber, which would fake a loss in zero-loss tests.
        return (
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            # started as root, mosquitto drops to user "mosquitto", which cannot write its
            # persistence file into a pytest tmp dir: a restart would lose every session
            f"{'user root' if os.geteuid() == 0 else ''}\n"
            f"{self.extra_conf}\n"
        )

    def start(self):
        path = self.workdir / "mosquitto.conf"
        path.write_text(self.conf())
        self.log = open(self.workdir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(path)], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()[-500:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self):
        procs.stop(self.proc, 5)
        self.proc = None

    def restart(self, down_s=0.0):
        self.stop()
        time.sleep(down_s)
        return self.start()
