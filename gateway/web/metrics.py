# Prometheus metrics at /metrics, read from the same status snapshot as the page,
# at scrape time (no second set of counters to keep in step).
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class StatusCollector:
    def __init__(self, status_fn: Callable[[], dict[str, Any]]) -> None:
        self.status_fn = status_fn

    def collect(self) -> Iterator[Metric]:
        status = self.status_fn()
        gw = status.get("gateway", {})
        gauges = (
            ("citynode_broker_connected", "1 while the MQTT broker connection is up", "broker_connected"),
            ("citynode_outbox_depth", "frames durably stored and not yet acknowledged by the broker",
             "outbox_depth"),
            ("citynode_outbox_oldest_age_seconds", "age of the oldest frame in the outbox", "outbox_oldest_age_s"),
            ("citynode_frames_per_second", "accepted frames per second, recent average", "frames_per_s"),
            ("citynode_disk_free_bytes", "free bytes on the data_dir file system", "disk_free_bytes"),
            ("citynode_uptime_seconds", "seconds since the gateway started", "uptime_s"),
        )
        for name, doc, key in gauges:
            value = gw.get(key)
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, int | float):
                g = GaugeMetricFamily(name, doc)
                g.add_metric([], value)
                yield g
        info = GaugeMetricFamily("citynode_gateway_info", "gateway id and version", labels=["gateway", "version"])
        info.add_metric([str(gw.get("id", "")), str(gw.get("version", ""))], 1)
        yield info
        accepted = CounterMetricFamily("citynode_frames_accepted", "frames accepted per node", labels=["node"])
        rejected = CounterMetricFamily("citynode_frames_rejected",
                                       "frames of a known node rejected, per node and reason (mac, retired, replay, "
                                       "payload, ...); with citynode_rejects_total, every reject counted once",
                                       labels=["node", "reason"])
        gaps = CounterMetricFamily("citynode_sequence_gaps", "frames missing in the sequence per node",
                                   labels=["node"])
        seen = GaugeMetricFamily("citynode_node_last_seen_timestamp_seconds", "Unix time a node was last heard",
                                 labels=["node"])
        eta = GaugeMetricFamily("citynode_node_overflow_eta_seconds",
                                "forecast seconds until the level reaches the node's alarm level (docs/forecast.md)",
                                labels=["node"])
        warning = GaugeMetricFamily("citynode_node_overflow_warning", "1 while an overflow warning is on",
                                    labels=["node"])
        unverified = CounterMetricFamily("citynode_node_unverified_frames",
                                         "frames naming a node whose MAC did not verify (anyone can name a node, so "
                                         "they are not that node's rejects)", labels=["node"])
        results = CounterMetricFamily("citynode_node_command_results",
                                      "command results a node reported, by result (applied, bad_signature, "
                                      "other_boot, replay, out_of_range, ...: SPEC.md 6.7)", labels=["node", "result"])
        for node in status.get("nodes", []):
            nid = str(node.get("id"))
            if node.get("unverified"):
                unverified.add_metric([nid], node["unverified"])
            for result, n in (node.get("commands") or {}).items():
                results.add_metric([nid, str(result)], n)
            accepted.add_metric([nid], node.get("accepted", 0))
            for reason, n in (node.get("rejected") or {}).items():
                rejected.add_metric([nid, str(reason)], n)
            gaps.add_metric([nid], node.get("gaps", 0))
            if node.get("last_seen"):
                seen.add_metric([nid], node["last_seen"])
            fc = node.get("forecast")
            if fc:
                warning.add_metric([nid], int(bool(fc.get("warning"))))
                if fc.get("eta_s") is not None:
                    eta.add_metric([nid], fc["eta_s"])
        unattributed = CounterMetricFamily("citynode_rejects",
                                           "input rejected before a node was known (oversize, CBOR and COSE faults, "
                                           "kid, unknown, serial noise, overload), by reason; not in "
                                           "citynode_frames_rejected_total", labels=["reason"])
        for reason, n in (gw.get("rejected_unattributed") or {}).items():
            unattributed.add_metric([str(reason)], n)
        counters = CounterMetricFamily("citynode_gateway_events", "the gateway's counters by name "
                                       "(received, acks_sent, forwarded, st_sent, st_rejected, ...)", labels=["name"])
        for name, n in sorted((gw.get("counters") or {}).items()):
            if isinstance(n, int | float) and not isinstance(n, bool):
                counters.add_metric([str(name)], n)
        yield from (accepted, rejected, gaps, seen, unattributed, eta, warning, counters, unverified, results)
