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
import logging
import multiprocessing
import signal
import sys
import threading
import time

log = logging.getLogger("citynode.gateway")

STATUS_S = 0.02  # child: after a PUBACK, wait this long for more before telling the parent
PARENT_TICK_S = 0.25  # parent: gateway state (alarms) and changed node states this often
RESTART_S = 1.0


class PublisherProcess:
    def __init__(self, *, settings, db_path, states_fn, on_command, gateway_state_fn, alarms_fn):
        self.s = settings
        self.db_path = str(db_path)
        self.states_fn = states_fn
        self.on_command = on_command
        self.gateway_state_fn = gateway_state_fn
        self.alarms_fn = alarms_fn
        self.connected = False
        self.connects = 0
        self.inflight = 0
        self.pubacks = 0
        self.taken_over = False  # the child's Forwarder.taken_over: the mqtt_client_id_in_use alarm
        self.heartbeat = time.monotonic()
        self.restarts = 0
        self._acked = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._versions = {}
        self._conn = None
        self._proc = None

    # ------------------------------------------------------------ the pipeline's interface

    def start(self):
        self._spawn()
        threading.Thread(target=self._tick, name="mqtt-proxy-tick", daemon=True).start()
        return self

    def wake(self):
        self._send(("wake",))

    def take_acked(self):
        with self._lock:
            ids, self._acked = self._acked, []
        return ids

    def deleted(self, ids):
        self._send(("deleted", ids))

    def stop(self):
        self._stopping.set()
        self._send(("gw", self.gateway_state_fn(), self.alarms_fn()))
        self._send(("stop",))
        self._stopped.wait(15)
        if self._proc is not None:
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)

    # ------------------------------------------------------------ parent side

    def _spawn(self):
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        parent_end, child_end = ctx.Pipe(duplex=True)
        level = logging.getLogger().getEffectiveLevel()
        # the child's first "online" must already carry time and counters (the contract)
        initial = (self.gateway_state_fn(), self.alarms_fn())
        proc = ctx.Process(target=child_main, args=(self.s, self.db_path, child_end, level, initial),
                           name="citynode-mqtt", daemon=True)
        proc.start()
        child_end.close()
        self._conn, self._proc = parent_end, proc
        self._versions = {}  # a new child publishes every node state once
        threading.Thread(target=self._receive, args=(parent_end, proc), name="mqtt-proxy-rx", daemon=True).start()
        self._send(("gw", self.gateway_state_fn(), self.alarms_fn()))

    def _send(self, msg):
        with self._send_lock:
            try:
                if self._conn is not None:
                    self._conn.send(msg)
            except (OSError, ValueError):
                pass  # the child is gone; the receiver restarts it

    def _receive(self, conn, proc):
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
            elif kind == "command":
                self.on_command(*msg[1:])
            elif kind == "stopped":
                self._stopped.set()
                return
        self.connected = False
        self.inflight = 0
        self.taken_over = False  # a new child finds out again (three short sessions)
        if self._stopping.is_set():
            self._stopped.set()
            return
        proc.join(1)
        log.error("mqtt publisher process exited (code %s); restarting it, the outbox keeps every frame",
                  proc.exitcode)
        time.sleep(RESTART_S)
        if not self._stopping.is_set():
            self.restarts += 1
            self._spawn()

    def _tick(self):
        while not self._stopping.wait(PARENT_TICK_S):
            self._send(("gw", self.gateway_state_fn(), self.alarms_fn()))
            changed = [(node, st) for node, st in self.states_fn(self._versions)]
            if changed:
                self._send(("states", changed))


# ---------------------------------------------------------------- child side


class _ChildHost:
    # What the Forwarder asks its host for, fed from the parent's messages.
    def __init__(self, conn, send, initial):
        self.conn = conn
        self.send = send
        self.gw, self.alarm_list = initial
        self.states = {}  # node -> (version, state dict)
        self.version = 0

    def gateway_state(self):
        return dict(self.gw)

    def alarms(self):
        return self.alarm_list

    def changed_nodes(self, seen):
        out = []
        for node, (version, st) in list(self.states.items()):
            if seen.get(node) != version:
                seen[node] = version
                out.append((node, st))
        return out

    def command(self, topic, payload, retained):
        self.send(("command", topic, payload, retained))


class _Terminate(Exception):
    pass


def _terminate(signum, frame):
    raise _Terminate()


def child_main(settings, db_path, conn, log_level, initial):
    from gateway.mqtt import Forwarder

    # Ctrl-C and SIGHUP reach the whole process group: the parent handles them. SIGTERM
    # (systemd signals the whole group; multiprocessing's terminate()) ends the child
    # cleanly; the parent's outbox keeps whatever it did not get to publish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[mqtt]: %(message)s")
    send_lock = threading.Lock()

    def send(msg):
        with send_lock:
            conn.send(msg)

    host = _ChildHost(conn, send, initial)
    fwd = Forwarder(settings=settings, db_path=db_path, states_fn=host.changed_nodes, on_command=host.command,
                    gateway_state_fn=host.gateway_state, alarms_fn=host.alarms)
    done = threading.Event()

    activity = threading.Event()  # set by the Forwarder when PUBACKs come: no polling while idle
    fwd.activity = activity

    def pump():
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
