# The gateway's outputs behind one seam. An output turns one accepted, verified frame
# (gateway/outputs.py Frame: the decoded message, its node, times and link) into outbox rows
# (topic, payload); the pipeline (gateway/pipeline.py) and the city relay (gateway/relay.py)
# store those rows in the frame's group commit and a publisher sends them, so every output is
# as durable as the `up` envelope. Both build their outputs here, from the config:
#
#   outputs = build(settings, keys, thresholds_fn)     # an OutputSet, in registry order
#   rows, own_rows = outputs.messages(frame, stats)    # per accepted frame
#   rows = outputs.sweep(time.time())                  # per batch and while idle
#   outputs.reset()                                    # after a failed commit
#
# Adding an output: a class with messages(frame) (subclass Output) in a module of its own or
# beside its kin (outputs.py, consumers.py), one Entry in OUTPUTS below (its name, when the
# config wants it, how to make it), its [publish] key in gateway/config.py, and a line in
# docs/gateway.md. The topics are the MQTT contract of docs/gateway.md ("MQTT topics").
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.forecast import Forecasts
    from gateway.outputs import Frame, Row
    from gateway.stats import Stats

log = logging.getLogger("citynode.gateway")


class Output:
    # What every output implements: messages(). The rest has defaults:
    #   name     its OUTPUTS entry's (build() sets it), for the log and the counters
    #   required a frame it cannot convert is refused whole (the `up` envelope: the frame's
    #            own record); any other output that raises loses its rows of that frame only
    #   table    None: its rows go to the outbox the MQTT publisher reads; a name: to that
    #            outbox table, read by its own sender (SensorThings over HTTP, sensorthings.py)
    #   sweep    rows of its own, not caused by a frame (availability "offline" after a silence)
    #   reset    a failed commit lost what messages() returned: say it again with the next frame
    name: str = ""
    required: bool = False
    table: str | None = None

    def messages(self, f: Frame) -> list[Row]:
        raise NotImplementedError

    def sweep(self, now: float) -> list[Row]:  # noqa: ARG002 - an output without rows of its own
        return []

    def reset(self) -> None:
        return None


def _overrides(out: Output, name: str) -> bool:
    return getattr(type(out), name, None) is not getattr(Output, name)


class OutputSet:
    # The outputs of one gateway or relay, grouped once so the per-frame loop does no probing.
    def __init__(self, outputs: Iterable[Output]) -> None:
        self.all = list(outputs)
        self.main = [o for o in self.all if o.table is None]
        self.own = [o for o in self.all if o.table is not None]  # rows for their own outbox table
        self.sweepers = [o for o in self.main if _overrides(o, "sweep")]
        self._resetters = [o for o in self.all if _overrides(o, "reset")]

    def messages(self, f: Frame, stats: Stats | None = None) -> tuple[list[Row], list[Row]]:
        # -> (rows for the MQTT outbox, rows for the outputs' own tables). The one place, for the
        # gateway's pipeline and the relay, that runs a frame's outputs: one that raises on this
        # frame loses its rows of it only, counted in `stats` (output_failures) and said in one
        # line naming it; the others' rows are returned. A required output (the envelope) that
        # raises, or any without `stats`, raises it: the caller refuses the frame.
        rows: list[Row] = []
        own: list[Row] = []
        for out in self.all:
            try:
                made = out.messages(f)
            except Exception as e:
                if stats is None or out.required:
                    raise
                _failed(stats, out, f, e)
                continue
            (rows if out.table is None else own).extend(made)
        return rows, own

    def sweep(self, now: float) -> list[Row]:
        return [row for out in self.sweepers for row in out.sweep(now)] if self.sweepers else []

    def reset(self) -> None:
        for out in self._resetters:
            out.reset()

    def get(self, cls: type[Any]) -> Any:
        # the output of that class, or None (the daemon's status page reads the forecasts)
        return next((o for o in self.all if isinstance(o, cls)), None)

    @property
    def forecasts(self) -> Forecasts | None:
        from gateway.forecast import Forecasts

        return self.get(Forecasts)


def _failed(stats: Stats, out: Output, f: Frame, e: Exception) -> None:
    # An output (not the envelope) raised on a frame that is stored all the same: its rows of
    # that frame are left out, counted, and said in one line (rate-limited per output; an
    # output's error names no key: it sees only the verified frame)
    stats.count("output_failures")
    stats.rejects_log.warning(f"output {out.name}", "output %s: no rows for %s boot %d seq %d from %s (the frame "
                              "is stored with the other outputs' rows): %s", out.name or type(out).__name__,
                              f.node, f.msg["boot"], f.msg["seq"], f.link, one_line(e))


def one_line(e: BaseException) -> str:
    # an exception as one short log line: its type and the start of its text (outputs' failures,
    # frames refused for their envelope, the ChirpStack link's unreadable events)
    return " ".join(f"{type(e).__name__}: {e}".split())[:160]


@dataclass(frozen=True)
class Context:
    # what an output may be made from
    settings: Settings
    keys: Mapping[str, bytes]
    thresholds_fn: Callable[[str], dict[str, float] | None]  # a node's thresholds as it last said them

    @property
    def prefix(self) -> str:
        return self.settings.mqtt.topic_prefix if self.settings.mqtt is not None else "citynode"


@dataclass(frozen=True)
class Entry:
    name: str
    wanted: Callable[[Settings], bool]  # does this config ask for it
    make: Callable[[Context], Output]
    mqtt_only: bool = True  # a gateway with [nats] and no [mqtt] makes only the others (the relay makes these)


def _envelope(c: Context) -> Output:
    from gateway.outputs import Envelope

    return Envelope(c.prefix, c.settings.gateway_id)


def _sensorthings(c: Context) -> Output:
    from gateway.config import check_mappings
    from gateway.outputs import SensorThings

    s = c.settings
    server = s.sensorthings_server  # None: Observations go to the [mqtt] broker with the rest
    check_mappings(s, c.keys)
    out = SensorThings(s.sensorthings, s.gateway_id, version=server.version if server else "v1.1",
                       table="sensorthings" if server else None, ids=s.publish.sensorthings_ids)
    if server is None or server.mode == "mqtt":
        log.warning("sensorthings: Observations over MQTT: FROST acknowledges before it creates and only logs "
                    "a failure, so a refused Observation is lost; an http(s):// [sensorthings_server] is "
                    "what knows (docs/gateway.md, SensorThings)")
    return out


def _senml(c: Context) -> Output:
    from gateway.consumers import SenmlPack

    return SenmlPack(c.prefix)


def _availability(c: Context) -> Output:
    from gateway.consumers import Availability

    return Availability(c.prefix, c.settings.publish.availability_after_s)


def _homeassistant(c: Context) -> Output:
    from gateway.consumers import HomeAssistant

    pb = c.settings.publish
    return HomeAssistant(c.prefix, c.settings.gateway_id, pb.homeassistant_prefix, availability=pb.availability,
                         expire_s=pb.availability_after_s)


def _aggregates(c: Context) -> Output:
    from gateway.outputs import Aggregates

    window = c.settings.aggregate_window_s
    assert window  # wanted() said so
    return Aggregates(c.prefix, window)


def _forecast(c: Context) -> Output:
    from gateway.forecast import Forecasts
    from gateway.forecast import Settings as Tuning

    s = c.settings
    f = s.forecast
    out = Forecasts(c.prefix, s.gateway_id, Tuning(lead_s=f.lead_s, min_confidence=f.min_confidence), f.alarm_m,
                    thresholds_fn=c.thresholds_fn, state_path=str(s.data_dir / "forecast.json"),
                    rain_gauges=dict(f.rain_gauges))
    if out.load_error:
        log.warning("forecast state not restored, starting afresh (%s)", out.load_error)
    return out


# In this order their rows of one frame enter the outbox (and reach the broker).
OUTPUTS: tuple[Entry, ...] = (
    Entry("envelope", lambda s: True, _envelope, mqtt_only=False),  # P/nodes/<node>/up, always
    Entry("sensorthings", lambda s: bool(s.sensorthings), _sensorthings),  # [[sensorthings]]
    Entry("senml", lambda s: s.publish.senml, _senml),  # [publish] senml
    Entry("availability", lambda s: s.publish.availability, _availability),  # [publish] availability
    Entry("homeassistant", lambda s: s.publish.homeassistant, _homeassistant),  # [publish] homeassistant
    Entry("aggregates", lambda s: bool(s.aggregate_window_s), _aggregates),  # [aggregate] window_s
    Entry("forecast", lambda s: s.forecast.enabled, _forecast),  # [forecast] enabled
)


def build(s: Settings, keys: Mapping[str, bytes], thresholds_fn: Callable[[str], dict[str, float] | None],
          skip: Iterable[str] = ()) -> OutputSet:
    # The outputs this config asks for, in OUTPUTS order; skip names the ones the caller makes
    # another way (the relay makes the envelope with the gateway id of the gateway that heard the frame).
    skipped = set(skip)
    unknown = skipped - {e.name for e in OUTPUTS}
    if unknown:
        raise ValueError(f"no such output: {', '.join(sorted(unknown))}")
    c = Context(s, keys, thresholds_fn)
    made = []
    for e in OUTPUTS:
        if e.name not in skipped and (s.mqtt is not None or not e.mqtt_only) and e.wanted(s):
            out = e.make(c)
            out.name = e.name
            made.append(out)
    return OutputSet(made)


class Publisher(Protocol):
    # The other seam: what sends the outbox's rows, and what the pipeline (gateway/pipeline.py),
    # the relay and the daemon's watchdog and counters use of it. The MQTT thread publisher
    # (gateway/mqtt.py Forwarder), the publisher process (gateway/pubproc.py, the same Forwarder
    # in a child), the JetStream publisher and the fan-out to both (gateway/natsout.py). One
    # may also take committed rows in memory: offer(first_id, rows) (the pipeline asks getattr).
    @property
    def connected(self) -> bool: ...  # to its broker or stream now

    @property
    def connects(self) -> int: ...  # connections made since the start

    @property
    def inflight(self) -> int: ...  # rows sent and not yet acknowledged

    @property
    def pubacks(self) -> int: ...  # rows acknowledged since the start

    @property
    def heartbeat(self) -> float: ...  # time.monotonic() when its loop last turned (the watchdog)

    @property
    def taken_over(self) -> bool: ...  # another client took its session (alarm mqtt_client_id_in_use)

    def start(self) -> Any: ...

    def stop(self) -> None: ...

    def wake(self) -> None: ...  # rows were committed: read the outbox

    def take_acked(self) -> list[int]: ...  # outbox ids acknowledged since the last call

    def deleted(self, ids: Iterable[int]) -> None: ...  # those ids are gone from the outbox


def publisher_factory(s: Settings) -> Callable[..., Publisher] | None:
    # The publisher class (or factory) for this config, called with the daemon's keywords
    # (settings, db_path, states_fn, on_command, gateway_state_fn, alarms_fn): the MQTT thread
    # publisher (gateway/mqtt.py), or the publisher process (gateway/pubproc.py, publisher =
    # "process"), and with [nats] the JetStream publisher beside it or alone (gateway/natsout.py).
    # Imported when used: with publisher = "process" paho and ssl stay out of this process (RSS).
    publisher: Callable[..., Publisher] | None = None
    if s.mqtt is not None and s.mqtt.publisher == "process":
        from gateway.pubproc import PublisherProcess

        publisher = PublisherProcess
    elif s.mqtt is not None:
        from gateway.mqtt import Forwarder

        publisher = Forwarder
    if s.nats is not None:
        import functools

        from gateway.natsout import publisher as fleet_publisher

        return functools.partial(fleet_publisher, mqtt_publisher=publisher)
    return publisher


if TYPE_CHECKING:
    def _every_publisher() -> tuple[Callable[..., Publisher], ...]:
        # never called: the type check (pyright, tests/test_layout.py) holds each publisher class
        # to the Publisher seam, so one that loses a member fails there, not in a running gateway
        from gateway.mqtt import Forwarder
        from gateway.natsout import Fanout, NatsForwarder
        from gateway.pubproc import PublisherProcess

        return (Forwarder, PublisherProcess, NatsForwarder, Fanout)
