// citynode status page. Node-supplied strings only ever reach the page through
// textContent, never as HTML, so a hostile node id stays text.
"use strict";

const POLL_MS = 2000;
const HISTORY_MS = 10000;
const UNITS = { t: "°C", h: "%RH", p: "Pa", l: "m", d: "m", b: "V", i: "A", r: "dBW" };
const TITLES = { t: "air temperature", h: "humidity", p: "pressure", l: "wastewater level",
                 d: "distance to surface", b: "battery", i: "loop current", r: "signal" };
let selected = null;
let lastStatus = null;
let charts = {};
let historyTimer = null;
const CHART_HEIGHT = 200;

function $(id) { return document.getElementById(id); }

// the table's column names, from its header (index.html): a card's line labels on a phone
const COLUMNS = [...document.querySelectorAll("#nodes thead th")].map(th => th.textContent);

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  // its column's name: a narrow screen shows each row as a card of "name: value" lines (style.css)
  td.dataset.label = COLUMNS[tr.children.length] || "";
  tr.appendChild(td);
  return td;
}

function ago(seconds) {
  if (seconds == null || !isFinite(seconds)) return "never";
  if (seconds < 1) return "just now";
  if (seconds < 90) return Math.round(seconds) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

function duration(seconds) {
  // "30 s", "5 min", "5 min 30 s", "2 h 5 min", "3 d 4 h": no zero-valued leading unit
  if (seconds == null) return "–";
  seconds = Math.round(seconds);
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600), m = Math.floor(seconds % 3600 / 60);
  const s = seconds % 60;
  if (d) return d + " d" + (h ? " " + h + " h" : "");
  if (h) return h + " h" + (m ? " " + m + " min" : "");
  if (m) return m + " min" + (s ? " " + s + " s" : "");
  return s + " s";
}

function bytes(n) {
  if (n == null) return "–";
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}

function setValue(id, text, state) {
  const el = $(id);
  el.textContent = text;
  el.className = "value" + (state ? " " + state : "");
}

function renderHealth(s) {
  const g = s.gateway || {};
  $("gw-id").textContent = g.id || "";
  setValue("h-broker", g.broker_connected ? "connected" : "disconnected", g.broker_connected ? "ok" : "bad");
  setValue("h-outbox", g.outbox_depth == null ? "–" : String(g.outbox_depth), g.outbox_full ? "bad" : "");
  setValue("h-oldest", g.outbox_oldest_age_s ? duration(g.outbox_oldest_age_s) : "–",
           g.outbox_oldest_age_s > 300 ? "bad" : "");
  setValue("h-rate", g.frames_per_s == null ? "–" : Number(g.frames_per_s).toFixed(1));
  setValue("h-disk", bytes(g.disk_free_bytes), g.disk_free_bytes != null && g.disk_free_bytes < 50e6 ? "bad" : "");
  setValue("h-uptime", duration(g.uptime_s));
  setValue("h-version", g.version || "–");
  $("stale-after").textContent = s.stale_after_s != null ? duration(s.stale_after_s)
    : "three of its reporting intervals";
  $("updated").textContent = "updated " + new Date(s.now * 1000).toLocaleTimeString();
}

function rejectedText(r) {
  const parts = Object.entries(r || {}).filter(([, n]) => n).map(([k, n]) => k + " " + n);
  return parts.length ? parts.join(", ") : "0";
}

function commandText(n) {
  // the last command result the node reported (SPEC 6.7 result names), and unverified frames
  const c = n.command ? n.command.result + " #" + n.command.cmd_id : "–";
  return n.unverified ? c + ", unverified " + n.unverified : c;
}

function renderNodes(s) {
  const tbody = document.querySelector("#nodes tbody");
  const rows = [];
  const nodes = (s.nodes || []).slice().sort((a, b) => String(a.id).localeCompare(String(b.id)));
  $("node-count").textContent = "(" + nodes.length + ")";
  // nodes in the keys file the gateway has not heard since it started: listed, never heard
  for (const id of s.unheard || []) nodes.push({ id: id, never_heard: true, accepted: 0 });
  $("node-count").textContent = "(" + nodes.length + ")";
  for (const n of nodes) {
    const tr = document.createElement("tr");
    const age = n.last_seen ? s.now - n.last_seen : null;
    // the gateway sends each node's limit ([web] stale_after_s, or three of the node's intervals)
    const limit = n.stale_after_s != null ? n.stale_after_s : s.stale_after_s;
    const stale = age == null || (limit != null && age > limit);
    tr.dataset.node = n.id;
    if (stale) tr.classList.add("stale");
    if (n.id === selected) tr.classList.add("selected");
    const idCell = cell(tr, n.id, "node-id");
    if (stale) {
      const b = document.createElement("span");
      b.className = "badge stale";
      b.textContent = n.never_heard ? "never heard" : "stale";
      idCell.append(" ", b);
    }
    cell(tr, ago(age), "last-seen");
    cell(tr, n.battery_v == null ? "–" : Number(n.battery_v).toFixed(2) + " V", "num");
    cell(tr, n.link || "–");
    // the reception of its last frame over LoRa (radio modem or ChirpStack); none over other links
    cell(tr, n.rssi_dbm == null ? "–" : n.rssi_dbm + " dBm", "num rssi");
    cell(tr, n.snr_db == null ? "–" : n.snr_db + " dB", "num snr");
    cell(tr, n.firmware || "–");
    cell(tr, String(n.accepted || 0), "num");
    cell(tr, rejectedText(n.rejected), "rejected");
    cell(tr, String(n.gaps || 0), "num");
    cell(tr, commandText(n), "command");
    const mode = cell(tr, "");
    for (const [flag, label] of [["alarm", "alarm"], ["storm", "storm"], ["safe_mode", "safe mode"]]) {
      if (n[flag]) {
        const b = document.createElement("span");
        b.className = "badge " + flag;
        b.textContent = label;
        mode.append(b, " ");
      }
    }
    if (!mode.textContent) mode.textContent = n.never_heard ? "–" : "normal";
    healthCell(tr, n.health);
    etaCell(tr, n.forecast);
    tr.addEventListener("click", () => select(n.id));
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
  scrollHint();
  if (selected == null && nodes.length) select(nodes[0].id);
}

function scrollHint() {
  // a table wider than its box scrolls sideways: say so, and which columns are out of sight
  const box = $("nodes-box");
  const more = box.scrollWidth - box.clientWidth - box.scrollLeft > 1;
  const hint = $("scroll-hint");
  hint.hidden = !more;
  if (more) {
    const right = box.getBoundingClientRect().right;
    const hidden = [...document.querySelectorAll("#nodes thead th")]
      .filter(th => th.getBoundingClientRect().right > right + 1).map(th => th.textContent);
    hint.textContent = "scroll sideways for " + hidden.join(", ") + " →";
  }
}

function kb(bytes) {
  return (bytes / 1024).toFixed(bytes < 10240 ? 1 : 0) + " KB";
}

function healthCell(tr, h) {
  // what the node last reported of its health (SPEC 6.1 info 7-11): the buffer and the heap
  // in the cell, everything in the tooltip; a badge for flash errors and safe-mode time
  const td = cell(tr, "–", "health");
  if (!h) return;
  const short = [];
  const full = [];
  if (h.buffer) {
    const b = h.buffer;
    short.push("buffer " + b.frames);
    full.push("buffer: " + b.frames + " frames, " + kb(b.bytes) + ", " + b.torn + " torn, " + b.dropped + " dropped");
  }
  if (h.heap_free != null) {
    short.push("heap " + kb(h.heap_free));
    full.push("heap: " + kb(h.heap_free) + " free, largest block " + kb(h.heap_largest));
  }
  if (h.resets) full.push("resets: " + Object.entries(h.resets).map(([k, n]) => k + " " + n).join(", "));
  if (h.flash_errors != null) full.push("flash errors: " + h.flash_errors);
  if (h.safe_s != null) full.push("safe mode: " + h.safe_s + " s this boot");
  td.textContent = short.join(" · ") || "–";
  td.title = full.join("\n");
  for (const [bad, label] of [[h.flash_errors, "flash errors"], [h.safe_s, "safe " + Math.round((h.safe_s || 0) / 60) + " min"]]) {
    if (bad) {
      const badge = document.createElement("span");
      badge.className = "badge alarm";
      badge.textContent = label;
      td.append(" ", badge);
    }
  }
}

function etaCell(tr, f) {
  // the overflow forecast (docs/forecast.md): when the level may reach the alarm level,
  // with the forecast's own sentence as the tooltip
  const td = cell(tr, "–", "eta");
  if (!f) return;
  const eta = f.warning && f.eta_early_s != null ? Math.min(f.eta_s ?? f.eta_early_s, f.eta_early_s) : f.eta_s;
  if (eta === 0) td.textContent = "at alarm";
  else if (eta != null) td.textContent = "in " + (eta < 90 ? Math.round(eta) + " s" : Math.round(eta / 60) + " min");
  if (f.warning) {
    const b = document.createElement("span");
    b.className = "badge alarm";
    b.textContent = "warning";
    td.append(" ", b);
    td.classList.add("warning");
  }
  td.title = f.why || "";
}

function stormBands(u, storm) {
  // shade the time ranges the node reported storm mode
  const ctx = u.ctx, t = u.data[0];
  ctx.save();
  ctx.fillStyle = "rgba(59, 130, 246, 0.15)";
  for (let i = 0; i < t.length; i++) {
    if (!storm[i]) continue;
    let j = i;
    while (j + 1 < t.length && storm[j + 1]) j++;
    const x0 = u.valToPos(t[i], "x", true), x1 = u.valToPos(t[Math.min(j + 1, t.length - 1)], "x", true);
    ctx.fillRect(x0, u.bbox.top, Math.max(x1 - x0, 2), u.bbox.height);
    i = j;
  }
  ctx.restore();
}

function chartFor(name, hist, node) {
  let values = hist.series[name];
  let t = hist.t;
  // the level chart continues with the forecast's projection to the alarm level
  const proj = name === "l" && node && node.forecast && node.forecast.projection || [];
  let projected = null;
  if (proj.length > 1) {
    const last = t.length ? t[t.length - 1] : -Infinity;
    const ahead = proj.filter(p => p[0] > last);
    t = t.concat(ahead.map(p => p[0]));
    values = values.concat(ahead.map(() => null));
    projected = t.map(() => null);
    const start = t.length - ahead.length - 1;
    if (start >= 0) projected[start] = hist.series[name][start] ?? proj[0][1];
    ahead.forEach((p, i) => { projected[start + 1 + i] = p[1]; });
  }
  const data = [t, values];
  const series = [{}, { label: (TITLES[name] || name) + " (" + (UNITS[name] || "") + ")", stroke: "#1d4ed8",
                        width: 1.5, spanGaps: true, points: { show: hist.t.length < 60 } }];
  const th = (node && node.thresholds) || {};
  if (name === "l") {
    for (const [key, label, color] of [["alarm_m", "alarm threshold", "#b42318"],
                                       ["storm_m", "storm threshold", "#f79009"]]) {
      if (typeof th[key] === "number") {
        data.push(t.map(() => th[key]));
        series.push({ label: label, stroke: color, dash: [6, 4], width: 1, points: { show: false } });
      }
    }
  }
  if (projected) {
    data.push(projected);
    series.push({ label: "forecast", stroke: "#7a2e0e", dash: [2, 3], width: 2, spanGaps: true,
                  points: { show: false } });
  }
  const box = document.createElement("div");
  box.className = "chart";
  box.dataset.reading = name;
  const h3 = document.createElement("h3");
  h3.textContent = (TITLES[name] || name);
  box.appendChild(h3);
  const opts = { width: 300, height: CHART_HEIGHT, series: series, legend: { show: true },
                 scales: { x: { time: true } },
                 // y axis wide enough for its longest tick label (101,300 Pa must not lose digits)
                 axes: [{}, { size: (u, vals) => vals && vals.length ?
                              Math.max(...vals.map(v => String(v).length)) * 8 + 18 : 50 }],
                 hooks: name === "l" ? { drawClear: [u => stormBands(u, hist.storm.concat(
                   t.slice(hist.t.length).map(() => 0)))] } : {} };
  const plot = new uPlot(opts, data, box);
  box.dataset.points = String(values.filter(v => v != null).length);
  return { box: box, plot: plot };
}

function innerWidth(el) {
  // the card's content width: what a chart may use without sticking out of it
  const cs = getComputedStyle(el);
  return Math.floor(el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight));
}

function fitCharts() {
  // each chart as wide as its card (the grid decides the cards' widths), never wider
  for (const c of Object.values(charts)) {
    const w = Math.max(120, innerWidth(c.box));
    if (Math.abs(c.plot.width - w) >= 1) c.plot.setSize({ width: w, height: CHART_HEIGHT });
  }
}

const resizer = typeof ResizeObserver === "function" ? new ResizeObserver(() => fitCharts()) : null;

async function loadHistory() {
  if (selected == null) return;
  const node = selected;
  const res = await fetch("/api/nodes/" + encodeURIComponent(node) + "/history?hours=24");
  if ((!res.ok && res.status !== 404) || node !== selected) return;
  // 404: a node the history has nothing of (never heard): an empty history, said in words below
  const hist = res.ok ? await res.json() : { t: [], series: {}, storm: [] };
  const info = (lastStatus && lastStatus.nodes || []).find(n => n.id === node);
  for (const c of Object.values(charts)) c.plot.destroy();
  charts = {};
  const grid = $("chart-grid");
  const boxes = [];
  const order = ["l", "d", "t", "h", "p", "b", "i", "r"];
  const names = Object.keys(hist.series).sort((a, b) => (order.indexOf(a) + 99) % 99 - (order.indexOf(b) + 99) % 99);
  for (const name of names) {
    charts[name] = chartFor(name, hist, info);
    boxes.push(charts[name].box);
  }
  if (!names.length) {
    // nothing to draw: say why instead of an empty grid
    const p = document.createElement("p");
    p.className = "empty muted";
    p.textContent = info ? "No readings from " + node + " in the last 24 h." :
      node + " has not been heard since the gateway started: no readings yet. Is it powered, in range, and " +
      "provisioned with this gateway's keys file?";
    boxes.push(p);
  }
  grid.replaceChildren(...boxes);
  fitCharts();
  grid.dataset.node = node;
}

function select(node) {
  selected = node;
  $("chart-node").textContent = node;
  for (const tr of document.querySelectorAll("#nodes tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.node === node);
  }
  loadHistory();
  clearInterval(historyTimer);
  historyTimer = setInterval(loadHistory, HISTORY_MS);
}

async function poll() {
  try {
    const res = await fetch("/api/status");
    if (!res.ok) throw new Error("HTTP " + res.status);
    lastStatus = await res.json();
    renderHealth(lastStatus);
    renderNodes(lastStatus);
  } catch (e) {
    $("updated").textContent = "gateway not reachable (" + e.message + ")";
  }
}

if (resizer) resizer.observe($("chart-grid")); else window.addEventListener("resize", fitCharts);
window.addEventListener("resize", scrollHint);
$("nodes-box").addEventListener("scroll", scrollHint);
poll();
setInterval(poll, POLL_MS);
