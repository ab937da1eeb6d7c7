# Gateway: the whole daemon as one object, so `citynode gateway` and the demo (which
# embeds it next to an in-process broker) run the same code:
#   gw = Gateway(settings).start(); ...; gw.counters(); gw.stop()
from __future__ import annotations

import fcntl
import logging
import os
import pathlib
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from gateway import GatewayError, __version__, nodestate
from gateway.config import check_private
from gateway.downlink import Downlink, handle_command
from gateway.ingest import UdpLink, open_links
from gateway.keys import load_keys
from gateway.notify import notify, watchdog_interval_s
from gateway.outputs import iso
from gateway.pipeline import Pipeline
from gateway.registry import build as build_outputs
from gateway.registry import publisher_factory
from gateway.stats import Stats

if TYPE_CHECKING:
    from gateway.config import Settings
from gateway.store import Store

log = logging.getLogger("citynode.gateway")

OUTBOX_WARN = 0.9  # alarm "outbox_filling" above this share of [outbox] max_messages
ALARM_HOLD_S = 5.0  # a refusal keeps its alarm up this long, so a disk at the edge does not flap
STALE_INTERVALS = 3  # without [web] stale_after_s a node is stale after this many of its reporting intervals
STALE_MIN_S = 10.0
STALE_UNKNOWN_S = 900.0  # a node that never said its interval: three of the default 300 s


def stale_after_s(configured: float | None, interval_s: float | None) -> float:
    # how long a node may stay silent before the status page shows it red
    if configured is not None:
        return float(configured)
    if isinstance(interval_s, int | float) and interval_s > 0:
        return max(STALE_MIN_S, STALE_INTERVALS * float(interval_s))
    return STALE_UNKNOWN_S


def close_rest(owner: Any) -> None:
    # the last of a stop, for the gateway and the relay: the status page, its history, the
    # outbox, and the data_dir lock
    if owner.web:
        owner.web.stop()
    if owner.history:
        owner.history.close()
    owner.store.close()
    if owner._lock_fd is not None:
        os.close(owner._lock_fd)  # releases the data_dir lock
        owner._lock_fd = None


def _publishers(forwarder: Any) -> list[Any]:
    # the publishers behind the daemon's one (gateway/natsout.py Fanout holds MQTT's and JetStream's)
    if forwarder is None:
        return []
    return list(getattr(forwarder, "members", None) or [forwarder])


class DataDirInUse(GatewayError, RuntimeError):
    pass


def lock_data_dir(data_dir: pathlib.Path) -> int:
    # One gateway per data_dir: two on one outbox would both publish and delete its rows.
    # flock on data_dir/gateway.lock, held until the process ends (the kernel drops it on a
    # crash or kill -9, so there is never a stale lock); the file says who holds it.
    path = data_dir / "gateway.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DataDirInUse(f"data_dir {data_dir} is in use by another gateway (pid {holder}); stop it, or give "
                           "this gateway its own data_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class Gateway:
    def __init__(self, settings: Settings, keys: Mapping[str, bytes] | None = None) -> None:
        self.s = settings
        self.keys = keys if keys is not None else load_keys(settings.keys_file)
        self.stats = Stats()
        self.started = None
        self.links = []
        self.web = None
        self.st_sender = None  # [sensorthings_server]: gateway/sensorthings.py
        self.history = None
        self._watchdog = None
        self._stop = threading.Event()
        self._lock_fd = None
        self.persister = None
        self._rate_mark = (time.monotonic(), 0)
        self._rate_value = 0.0

    # ------------------------------------------------------------ life cycle

    def start(self) -> Self:
        s = self.s
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_data_dir(s.data_dir)
        try:
            return self._start_locked()
        except BaseException:
            for p in _publishers(getattr(self, "forwarder", None)):
                abandon = getattr(p, "abandon", None)  # the publisher process made at construction
                if abandon is not None:
                    abandon()
            if self.persister is not None:
                self.persister.stop()
            os.close(self._lock_fd)  # a gateway that did not start holds no lock
            self._lock_fd = None
            raise

    def _start_locked(self) -> Self:
        s = self.s
        # what nodes said before a restart (firmware, board, interval, thresholds...), before the
        # publisher's first retained states and the status page's first snapshot
        state_path = s.data_dir / nodestate.FILE_NAME
        restored = nodestate.load(state_path, known=set(self.keys))
        nodestate.restore(self.stats, restored)
        self.persister = nodestate.Persister(state_path, self.stats).start(restored)
        db_path = s.data_dir / "outbox.sqlite"
        self.store = Store(db_path, s.outbox.max_bytes)
        queued, counters = self.store.downlink()
        self.downlink = Downlink(s.downlink_max_per_node, s.downlink_attempts, queued, counters)
        outputs = build_outputs(s, self.keys, self._thresholds)  # gateway/registry.py
        self.forecasts = outputs.forecasts
        publisher = publisher_factory(s)  # MQTT (thread or process), JetStream, or both
        assert publisher is not None  # config.py: [mqtt] or [nats]
        self.forwarder = publisher(settings=s, db_path=db_path, states_fn=self.stats.changed_nodes,
                                   on_command=self._command, gateway_state_fn=self.gateway_state,
                                   alarms_fn=self.alarms)
        if s.web_listen:
            self._start_web(s.web_listen)
        self.pipeline = Pipeline(settings=s, keys=self.keys, store=self.store, outputs=outputs, stats=self.stats,
                                 downlink=self.downlink, forwarder=self.forwarder, history=self.history)
        server = s.sensorthings_server if s.mqtt is not None else None
        if server:
            from gateway.sensorthings import Sender as StSender

            self.st_sender = self.pipeline.st_sender = StSender(server, db_path, self.stats, s.gateway_id)
        self.links = open_links(s.ingest, self.pipeline.submit, self.pipeline.reject, lambda: self.pipeline.keys)
        self.started = time.time()
        self.forwarder.start()
        if self.st_sender:
            self.st_sender.start()
        udp = [link for link in self.links if isinstance(link, UdpLink)]
        self.pipeline.poll(udp)  # read by the pipeline thread itself: one wake-up per frame, not two
        self.pipeline.start()
        for link in self.links:
            link.start()
        log.info("gateway %s: %d node keys, %d messages in the outbox, ingest on %s", s.gateway_id, len(self.keys),
                 self.pipeline.depth, ", ".join(link.name for link in self.links))
        notify("READY=1\nSTATUS=forwarding")
        interval = watchdog_interval_s()
        if interval:
            self._watchdog = threading.Thread(target=self._watchdog_loop, args=(interval,), name="watchdog",
                                              daemon=True)
            self._watchdog.start()
        return self

    def _start_web(self, listen: str) -> None:
        from gateway.web.history import History
        from gateway.web.server import StatusWeb

        self.history = History(self.s.data_dir / "history.sqlite").start()
        try:
            self.web = StatusWeb(listen=listen, status_fn=self.status, history=self.history,
                                 token=self.s.web_token, stale_after_s=self.s.web_stale_after_s,
                                 hosts=self.s.web_hosts).start()
        except OSError as e:
            self.history.close()
            raise OSError(e.errno, f"status page: cannot listen on {listen}: {e.strerror}") from None
        log.info("status page on %s", self.web.url)

    def stop(self) -> None:
        # Ingest first (nothing new arrives), then the pipeline finishes its queue and
        # ACKs, then the publisher says offline and disconnects.
        notify("STOPPING=1")
        self._stop.set()
        for link in self.links:
            link.stop()
        self.pipeline.stop()
        if self.forecasts is not None:
            try:
                self.forecasts.save()  # the pipeline is done: the forecast state is final
            except OSError as e:
                log.warning("forecast state not saved: %s", e)
        for link in self.links:
            if isinstance(link, UdpLink):
                link.close()
        if self.persister is not None:
            self.persister.stop()
        self.forwarder.stop()
        if self.st_sender:
            self.st_sender.stop()
        self.pipeline._commit_housekeeping()  # delete what was PUBACKed at the end
        close_rest(self)
        log.info("gateway %s stopped; %d messages wait in the outbox; %d frames accepted in %d group commits",
                 self.s.gateway_id, self.pipeline.depth, self.stats.counters["accepted"], self.pipeline.commits)

    def _command(self, topic: str, payload: bytes, retained: bool) -> None:
        handle_command(topic, payload, retained, self.keys, self.downlink, self.stats)

    def reload_keys(self) -> bool:
        # SIGHUP: a bad file keeps the old keys (the daemon must not stop over a typo).
        try:
            check_private(self.s.keys_file, "[nodes] keys_file")  # as at start (gateway/cli.py)
            keys = load_keys(self.s.keys_file)
        except ValueError as e:
            log.error("keys not reloaded, keeping %d old keys: %s", len(self.keys), e)
            return False
        self.keys = keys
        self.pipeline.keys = keys
        log.info("keys reloaded: %d nodes", len(keys))
        return True

    def _watchdog_loop(self, interval: float) -> None:
        # Ping only while data moves: both threads went round their loops recently, and
        # the input queue and the publisher's window are not stuck.
        last_processed, last_pubacks = self.pipeline.processed, self.forwarder.pubacks
        while not self._stop.wait(interval):
            now = time.monotonic()
            p, f = self.pipeline, self.forwarder
            pipeline_ok = now - p.heartbeat < interval and (p.queue.empty() or p.processed != last_processed)
            # while disconnected the publisher is (re)connecting with backoff, which is its job
            publisher_ok = not f.connected or (now - f.heartbeat < max(interval, 2.0) and (
                f.inflight == 0 or f.pubacks != last_pubacks))
            last_processed, last_pubacks = p.processed, f.pubacks
            if pipeline_ok and publisher_ok:
                notify("WATCHDOG=1")
            else:
                log.warning("watchdog: pipeline %s, publisher %s; not pinging systemd",
                            "ok" if pipeline_ok else "stuck", "ok" if publisher_ok else "stuck")

    # ------------------------------------------------------------ state

    @property
    def udp_addresses(self) -> list[Any]:
        return [link.address for link in self.links if isinstance(link, UdpLink)]

    def _thresholds(self, node: str) -> dict[str, float] | None:
        st = self.stats.nodes.get(node)
        return st.thresholds if st is not None else None

    def alarms(self) -> list[str]:
        p = self.pipeline
        recent = p.last_failure[0] if time.monotonic() - p.last_failure[1] < ALARM_HOLD_S else None
        out = []
        if recent == "outbox_full" or p.depth >= self.s.outbox.max_messages:
            out.append("outbox_full")
        elif p.depth >= OUTBOX_WARN * self.s.outbox.max_messages:
            out.append("outbox_filling")
        if getattr(self.forwarder, "taken_over", False):
            out.append("mqtt_client_id_in_use")  # a second gateway with this id (gateway/mqtt.py)
        if any(getattr(f, "failed", False) for f in _publishers(self.forwarder)):
            out.append("publisher_failed")  # the publisher process kept exiting at start (gateway/pubproc.py)
        if recent == "disk_full" or p.store_error == "disk_full":
            out.append("disk_full")
        elif recent == "storage" or p.store_error:
            out.append("storage_error")
        return out

    def counters(self) -> dict[str, Any]:
        counts, rejected = self.stats.counters_snapshot()
        counters: dict[str, Any] = {**counts, "rejected": rejected}
        counters["outbox_depth"] = self.pipeline.depth
        counters["queue_depth"] = self.pipeline.queue.qsize()
        counters["inflight"] = self.forwarder.inflight
        counters["forwarded"] = self.forwarder.pubacks
        counters["downlink_queued"] = self.downlink.depth()
        counters["mqtt_connects"] = self.forwarder.connects
        counters.update(self._publisher_counts())
        return counters

    def _publisher_counts(self) -> dict[str, int]:
        # the publisher process's restarts and exits at start (gateway/pubproc.py); none for the thread
        for f in _publishers(self.forwarder):
            if hasattr(f, "start_failures"):
                return {"publisher_restarts": f.restarts, "publisher_start_failures": f.start_failures}
        return {}

    def gateway_state(self) -> dict[str, Any]:
        # The retained P/gateways/<id>/state payload while online.
        return {"state": "online", "gateway": self.s.gateway_id, "version": __version__, "time": iso(time.time()),
                "since": iso(self.started or time.time()), "alarms": self.alarms(), "counters": self.counters()}

    def status(self) -> dict[str, Any]:
        # The status page's snapshot (gateway.web): gateway figures and one entry per node.
        counters, rejected, nodes = self.stats.snapshot()
        counters["forwarded"] = self.forwarder.pubacks  # PUBACKed by the broker (the publisher counts them)
        counters.update(self._publisher_counts())
        p = self.pipeline
        gw = {"id": self.s.gateway_id, "version": __version__, "uptime_s": time.time() - (self.started or time.time()),
              "broker_connected": self.forwarder.connected, "outbox_depth": p.depth,
              "frames_per_s": self._rate(counters["accepted"]), "disk_free_bytes": p.disk_free,
              "rejected": rejected, "rejected_unattributed": self.stats.unattributed_snapshot(),
              "alarms": self.alarms(), "counters": counters}
        out = []
        for node, st in sorted(nodes.items()):
            st["id"] = node
            st["stale_after_s"] = stale_after_s(self.s.web_stale_after_s, st.get("interval_s"))
            fc = self.forecasts.nodes.get(node) if self.forecasts is not None else None
            if fc is not None and fc.last is not None:
                st["forecast"] = dict(fc.last, projection=fc.projection())
            out.append(st)
        # provisioned (in the keys file) but not heard since this start: the page lists them too
        return {"gateway": gw, "nodes": out, "unheard": sorted(set(self.keys) - set(nodes))}

    def _rate(self, accepted: int) -> float:
        # accepted frames per second, averaged over the last 10 s or more
        now = time.monotonic()
        t0, a0 = self._rate_mark
        if now - t0 >= 10.0:
            self._rate_value = (accepted - a0) / (now - t0)
            self._rate_mark = (now, accepted)
        return round(self._rate_value, 2)
