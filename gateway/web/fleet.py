# The relay's fleet page (gateway/relay.py): /api/fleet (JSON) and /fleet, a plain table
# rendered on the server (no script: the page's CSP allows none inline), refreshed every 5 s.
# Gateways alive by their heartbeats; per node, which gateways heard it, with RSSI where
# the link has one, and whose copy reached the stream first.
import html
import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response


def _cell(v: object) -> str:
    return "" if v is None else html.escape(str(v))


def render(fleet: dict[str, Any]) -> str:
    rows_gw = "".join(
        f"<tr><td>{_cell(g['id'])}</td><td>{'alive' if g['alive'] else 'DEAD'}</td>"
        f"<td>{_cell(g['last_heartbeat_s'])}</td><td>{_cell(g['outbox_depth'])}</td><td>{_cell(g['accepted'])}</td>"
        f"<td>{_cell(', '.join(g['alarms'] or []))}</td></tr>" for g in fleet["gateways"])
    rows_node = "".join(
        f"<tr><td>{_cell(n['id'])}</td><td>"
        + ", ".join(f"{_cell(h['gateway'])}" + (f" ({_cell(h['rssi'])} dBm)" if h.get("rssi") is not None else "")
                    for h in n["heard_by"])
        + f"</td><td>{_cell(n.get('delivered_by'))}</td><td>{_cell(n.get('frames'))}</td></tr>"
        for n in fleet["nodes"])
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">"
        f"<title>citynode fleet: {_cell(fleet['relay'])}</title></head><body>"
        f"<h1>Fleet of relay {_cell(fleet['relay'])}</h1>"
        f"<p>stream {_cell(fleet['stream'])}: {'connected' if fleet['stream_connected'] else 'NOT CONNECTED'}</p>"
        "<h2>Gateways</h2><table border=\"1\"><tr><th>gateway</th><th>state</th><th>last heartbeat (s ago)</th>"
        f"<th>outbox</th><th>frames accepted</th><th>alarms</th></tr>{rows_gw}</table>"
        "<h2>Nodes</h2><table border=\"1\"><tr><th>node</th><th>heard by</th><th>latest frame via</th>"
        f"<th>frames relayed</th></tr>{rows_node}</table></body></html>")


def add_fleet_page(app: Flask, fleet_fn: Callable[[], dict[str, Any]]) -> None:
    @app.get("/api/fleet")
    def api_fleet() -> Response:
        return Response(json.dumps(fleet_fn(), separators=(",", ":")), 200, {"Content-Type": "application/json",
                                                                            "Cache-Control": "no-store"})

    @app.get("/fleet")
    def fleet_page() -> Response:
        return Response(render(fleet_fn()), 200, {"Content-Type": "text/html; charset=utf-8"})
