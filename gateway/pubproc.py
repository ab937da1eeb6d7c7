# The publisher in a child process. paho costs as much CPU per message as the whole
# verify-store-ACK pipeline, and both in one interpreter share one lock (GIL): in its
# own process the publisher gets its own core. The child runs the same Forwarder; this
# proxy gives the parent the Forwarder's interface (wake, take_acked, deleted, counters).
#
# Parent -> child over a pipe: ("wake",) after a commit, ("deleted", ids), ("states", ...)
# and ("gw", state, alarms) for the retained state topics, ("stop",).
# Child -> parent: ("acked", ids) on PUBACK, ("command", topic, payload, retained) from
# P/nodes/+/down, ("status", connected, connects, inflight, pubacks,
# taken_over, heartbeat age), ("stopped",).
# The outbox stays the only queue: a child that dies loses nothing; it is restarted and
# resends from the outbox. A parent that dies (kill -9) closes the pipe and the child exits.
# A child first checks the installed paho (gateway/paho_adapter.py require) and says so,
# ("hello", None) or ("hello", the one line of what differs): the gateway waits for that
# before it starts, and refuses to start on a paho that differs, as with the thread
# publisher. A child that exits before it is up (its first "status") is restarted after a
# backoff (1 s doubling); after START_FAILURES_MAX such exits in a row it is not restarted:
# the alarm publisher_failed, counted (publisher_start_failures), one log line what to do.
#
# The child is `python -P -m gateway.pubproc FD`, started with subprocess: a new interpreter
# (no fork of a threaded parent) that imports only what the Forwarder needs, from the same
# gateway package as the parent. multiprocessing's spawn cost ~14 MiB more RSS: it also
# starts its resource tracker, a third interpreter for semaphores and shared memory this
# pipe never uses, and imports the parent's main module again in the child. The first
# message over the pipe is ("setup", settings, db_path, log level, (gateway state, alarms)).
from __future__ import annotations

import logging
import os
import pickle
import signal
import site
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, Self

from gateway import GatewayError, InstallError
from gateway.store import AckedRows

log = logging.getLogger("citynode.gateway")

if TYPE_CHECKING:
    from gateway.config import Settings

STATUS_S = 0.02  # child: after a PUBACK, wait this long for more before telling the parent
PARENT_TICK_S = 0.25  # parent: gateway state (alarms) and changed node states this often
RESTART_S = 1.0  # before a restart; doubled for each exit at start in a row
START_S = 30.0  # a new child must have checked paho (its hello) within this
START_FAILURES_MAX = 5  # exits at start in a row before the child is no longer restarted
_LENGTH = struct.Struct(">I")


class Channel:
    # Messages over one end of a socketpair: each a pickle after its length (4 bytes). One
    # thread receives; senders hold their own lock. multiprocessing.connection does the same
    # but imports tempfile, shutil, bz2, lzma...: ~0.5 MiB more RSS in each process.
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._rfile = sock.makefile("rb")

    def send(self, msg: object) -> None:
        data = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)
        self._sock.sendall(_LENGTH.pack(len(data)) + data)

    def recv(self) -> Any:
        head = self._rfile.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            raise EOFError
        (size,) = _LENGTH.unpack(head)
        data = self._rfile.read(size)
        if len(data) < size:
            raise EOFError
        return pickle.loads(data)

    def close(self) -> None:
        self._rfile.close()
        self._sock.close()


def _child_env():
    # The child imports the gateway package this process runs. Installed (site-packages), the
    # interpreter finds it on its own; from a checkout, its directory goes first on PYTHONPATH
    # (not a site directory: that would put every installed package before the stdlib).
    env = dict(os.environ)
    root = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    site_dirs = set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        site_dirs.add(site.getusersitepackages())
    if root not in {os.path.realpath(d) for d in site_dirs}:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


class PublisherProcess(AckedRows):
    # taken_over: the child's Forwarder.taken_over (the mqtt_client_id_in_use alarm); acked ids
    # come from the child, and deleted() tells it
    def __init__(self, *, settings: Settings, db_path: str | os.PathLike[str], states_fn: Callable[..., Any],
                 on_command: Callable[[str, bytes, bool], object], gateway_state_fn: Callable[[], dict[str, Any]],
                 alarms_fn: Callable[[], list[str]]) -> None:
        super().__init__(settings, str(db_path))
        self.states_fn = states_fn
        self.on_command = on_command
        self.gateway_state_fn = gateway_state_fn
        self.alarms_fn = alarms_fn
        self.restarts = 0
        self.start_failures = 0  # children that exited before they were up (paho refused, a crash at start)
        self.failed = False  # START_FAILURES_MAX of them in a row: not restarted (alarm publisher_failed)
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()  # no child runs any more (after stop(), or given up)
        self._versions = {}
        # the first child, now: a paho that differs is refused here, before the gateway opens
        # its ports (InstallError, one line, exit 78; the thread publisher's Forwarder refuses here too)
        self._conn, self._proc = self._launch()
        self._started = False

    # ------------------------------------------------------------ the pipeline's interface

    def start(self) -> Self:
        self._started = True
        self._setup(self._conn, self._proc)
        threading.Thread(target=self._supervise, args=(self._conn, self._proc), name="mqtt-proxy-rx",
                         daemon=True).start()
        threading.Thread(target=self._tick, name="mqtt-proxy-tick", daemon=True).start()
        return self

    def abandon(self) -> None:
        # the gateway did not start after all (a port taken): the child made in __init__ goes
        if not self._started:
            self._started = True
            self._conn.close()  # it reads EOF where it waits for its setup, and exits
            _reap(self._proc)

    def wake(self) -> None:
        self._send(("wake",))

    def deleted(self, ids: Iterable[int]) -> None:
        self._send(("deleted", ids))

    def stop(self) -> None:
        if not self._started:
            self.abandon()
            return
        self._stopping.set()
        self._send(("gw", self.gateway_state_fn(), self.alarms_fn()))
        self._send(("stop",))
        self._stopped.wait(15)
        _reap(self._proc, 5)

    # ------------------------------------------------------------ parent side

    def _launch(self) -> tuple[Channel, subprocess.Popen[bytes]]:
        # A new child that has checked the installed paho: -> its channel and process. Raises
        # GatewayError with one line: what paho lacks (the child's words), or that the child
        # exited or kept silent before it said.
        parent_sock, child_sock = socket.socketpair()  # both ends non-inheritable (PEP 446)
        fd = child_sock.fileno()
        env = _child_env()
        try:
            # -P: the parent's working directory is not put on sys.path (it may hold another gateway/)
            proc = subprocess.Popen([sys.executable, "-P", "-m", "gateway.pubproc", str(fd)], pass_fds=(fd,),
                                    env=env, stdin=subprocess.DEVNULL)
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        conn = Channel(parent_sock)
        parent_sock.settimeout(START_S)
        try:
            _, problem = conn.recv()  # ("hello", None | what differs)
        except (EOFError, OSError) as e:
            conn.close()
            code = _reap(proc)
            why = (f"did not start within {START_S:.0f} s" if isinstance(e, TimeoutError)
                   else f"exited at start (code {code})")
            raise GatewayError(f"the mqtt publisher process {why}") from None
        parent_sock.settimeout(None)
        if problem is not None:  # it exits
            conn.close()
            _reap(proc)
            raise InstallError(problem)  # as the thread publisher's PahoIncompatible: no restart fixes it
        return conn, proc

    def _setup(self, conn: Channel, proc: subprocess.Popen[bytes]) -> None:
        self._conn, self._proc = conn, proc
        self._versions = {}  # a new child publishes every node state once
        level = logging.getLogger().getEffectiveLevel()
        # the child's first "online" must already carry time and counters (the contract)
        initial = (self.gateway_state_fn(), self.alarms_fn())
        self._send(("setup", self.s, self.db_path, level, initial))
        self._send(("gw", self.gateway_state_fn(), self.alarms_fn()))

    def _send(self, msg: object) -> None:
        with self._send_lock:
            try:
                if self._conn is not None:
                    self._conn.send(msg)
            except (OSError, ValueError):
                pass  # the child is gone; the receiver restarts it

    def _supervise(self, conn: Channel, proc: subprocess.Popen[bytes]) -> None:
        # the child's messages until it is gone, then the next child, until stop() (or given up)
        in_row = 0  # children in a row that exited before they were up
        try:
            while True:
                end = self._receive(conn)
                if end == "stopped" or self._stopping.is_set():
                    return
                code = _reap(proc, 1)
                if end == "up":
                    in_row = 0
                    log.error("mqtt publisher process exited (code %s); restarting it, the outbox keeps every frame",
                              code)
                else:
                    in_row += 1
                    self.start_failures += 1
                    log.error("mqtt publisher process exited at start (code %s), %d in a row", code, in_row)
                while True:
                    if in_row >= START_FAILURES_MAX:
                        self.failed = True
                        log.error("mqtt publisher process: exited at start %d times in a row; not restarting it "
                                  "(alarm publisher_failed). Frames are still stored and ACKed and wait in the outbox: "
                                  "fix the cause in the lines above and restart the gateway", in_row)
                        return
                    if self._stopping.wait(RESTART_S * 2 ** max(0, in_row - 1)):
                        return
                    self.restarts += 1
                    try:
                        conn, proc = self._launch()
                        break
                    except (GatewayError, OSError) as e:
                        in_row += 1
                        self.start_failures += 1
                        log.error("mqtt publisher process: %s; %d in a row", e, in_row)
                if self._stopping.is_set():
                    conn.close()  # too late: it exits where it waits for its setup
                    _reap(proc)
                    return
                self._setup(conn, proc)
        finally:
            self._stopped.set()

    def _receive(self, conn: Channel) -> str:
        # -> "stopped" (the child said goodbye), "up" (it went away after it was up), or
        # "start" (it went away before its first status)
        up = False
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "acked":
                with self._lock:
                    self._acked.extend(msg[1])
            elif kind == "status":
                self.connected, self.connects, self.inflight, self.pubacks, self.taken_over, age = msg[1:]
                self.heartbeat = time.monotonic() - age
                up = True
            elif kind == "command":
                self.on_command(*msg[1:])
            elif kind == "stopped":
                return "stopped"
        with self._send_lock:
            conn.close()
        self.connected = False
        self.inflight = 0
        self.taken_over = False  # a new child finds out again (three short sessions)
        return "up" if up else "start"

    def _tick(self) -> None:
        while not self._stopping.wait(PARENT_TICK_S):
            self._send(("gw", self.gateway_state_fn(), self.alarms_fn()))
            changed = [(node, st) for node, st in self.states_fn(self._versions)]
            if changed:
                self._send(("states", changed))


def _reap(proc: subprocess.Popen[bytes], wait_s: float = 5.0) -> int | None:
    # -> the exit code of a child that is going away; one that does not is terminated, then killed
    try:
        return proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
    try:
        return proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# ---------------------------------------------------------------- child side


class _ChildHost:
    # What the Forwarder asks its host for, fed from the parent's messages.
    def __init__(self, conn: Channel, send: Callable[[object], None],
                 initial: tuple[dict[str, Any], list[str]]) -> None:
        self.conn = conn
        self.send = send
        self.gw, self.alarm_list = initial
        self.states = {}  # node -> (version, state dict)
        self.version = 0

    def gateway_state(self) -> dict[str, Any]:
        return dict(self.gw)

    def alarms(self) -> list[str]:
        return self.alarm_list

    def changed_nodes(self, seen: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for node, (version, st) in list(self.states.items()):
            if seen.get(node) != version:
                seen[node] = version
                out.append((node, st))
        return out

    def command(self, topic: str, payload: bytes, retained: bool) -> None:
        self.send(("command", topic, payload, retained))


class _Terminate(Exception):
    pass


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    raise _Terminate()


def child_main(fd: int) -> None:
    # Ctrl-C and SIGHUP reach the whole process group: the parent handles them. SIGTERM
    # (systemd signals the whole group; PublisherProcess.stop's terminate()) ends the child
    # cleanly; the parent's outbox keeps whatever it did not get to publish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    conn = Channel(socket.socket(fileno=fd))
    from gateway.paho_adapter import PahoIncompatible, require
    try:
        require()
        problem = None
    except PahoIncompatible as e:  # the parent says it, in one line: refused at start, or logged
        problem = str(e)
    try:
        conn.send(("hello", problem))
        if problem is not None:
            sys.exit(1)
        _, settings, db_path, log_level, initial = conn.recv()  # ("setup", ...)
    except (EOFError, OSError):
        return  # the parent went away before it said what to do
    signal.signal(signal.SIGTERM, _terminate)

    from gateway.mqtt import Forwarder
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[mqtt]: %(message)s")
    send_lock = threading.Lock()

    def send(msg: object) -> None:
        with send_lock:
            conn.send(msg)

    host = _ChildHost(conn, send, initial)
    fwd = Forwarder(settings=settings, db_path=db_path, states_fn=host.changed_nodes, on_command=host.command,
                    gateway_state_fn=host.gateway_state, alarms_fn=host.alarms)
    done = threading.Event()

    activity = threading.Event()  # set by the Forwarder when PUBACKs come: no polling while idle
    fwd.activity = activity

    def pump() -> None:
        last, last_t = None, 0.0
        while not done.is_set():
            activity.clear()
            try:
                ids = fwd.take_acked()
                if ids:
                    send(("acked", ids))
                status = (fwd.connected, fwd.connects, fwd.inflight, fwd.pubacks, fwd.taken_over)
                now = time.monotonic()
                if status != last or now - last_t >= PARENT_TICK_S:
                    send(("status", *status, now - fwd.heartbeat))
                    last, last_t = status, now
            except (OSError, ValueError):
                return
            if activity.wait(PARENT_TICK_S):
                done.wait(STATUS_S)  # let the rest of this burst's PUBACKs join one message

    fwd.start()
    pumper = threading.Thread(target=pump, name="mqtt-pump", daemon=True)
    pumper.start()
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError, _Terminate):
                break  # the parent is gone, or we were told to stop
            kind = msg[0]
            if kind == "wake":
                fwd.wake()
            elif kind == "deleted":
                fwd.deleted(msg[1])
            elif kind == "states":
                host.version += 1
                for node, st in msg[1]:
                    host.states[node] = (host.version, st)
            elif kind == "gw":
                host.gw, host.alarm_list = msg[1], msg[2]
            elif kind == "stop":
                break
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the goodbye
        fwd.stop()
        done.set()
        activity.set()
        pumper.join(1)
        try:
            ids = fwd.take_acked()
            if ids:
                send(("acked", ids))
            send(("status", False, fwd.connects, 0, fwd.pubacks, fwd.taken_over, 0.0))
            send(("stopped",))
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
