// clipfl dashboard: live charts from /api/events (server-sent events), hand-drawn in SVG.
// No dependency and no external resource, so the page works on a machine without internet.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const W = 600, H = 260, PAD = { left: 52, right: 14, top: 26, bottom: 34 };
const COLORS = ["#2f6fdf", "#e0622d", "#2a9d5b", "#9b51c8", "#c9a227", "#d13f7a", "#3bb0c9", "#6b7280"];
const STAGE_ORDER = ["advertise_keys", "share_keys", "masked_input", "unmasking"];

const state = { status: {}, rounds: new Map(), stages: new Map(), pending: false };

// ------------------------------------------------------------------------------- state updates

function addRound(row) {
  if (typeof row.round !== "number") return;
  state.rounds.set(row.round, row);
  if (row.stage_seconds && typeof row.stage_seconds === "object") {
    for (const [name, s] of Object.entries(row.stage_seconds)) addStage({ round: row.round, stage: name, seconds: s });
  }
}

function addStage(ev) {
  if (typeof ev.round !== "number" || typeof ev.stage !== "string" || typeof ev.seconds !== "number") return;
  if (!state.stages.has(ev.round)) state.stages.set(ev.round, new Map());
  state.stages.get(ev.round).set(ev.stage, ev.seconds);
}

function applySnapshot(snap) {
  state.status = snap.status || {};
  state.rounds = new Map();
  state.stages = new Map();
  for (const row of snap.rounds || []) addRound(row);
  for (const ev of snap.stages || []) addStage(ev);
}

function schedule() {
  if (state.pending) return;
  state.pending = true;
  requestAnimationFrame(() => { state.pending = false; render(); });
}

// ------------------------------------------------------------------------------------ formatting

function fmtSeconds(s) {
  if (s == null || !isFinite(s)) return "–";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function fmtAxisSeconds(t) {
  if (t === 0) return "0";
  if (t < 120) return fmtTick(t) + " s";
  if (t < 7200) return fmtTick(t / 60) + " min";
  return fmtTick(t / 3600) + " h";
}

function fmtTick(v) {
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
  if (a >= 10) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1).replace(/\.0$/, "");
  return v.toPrecision(2).replace(/0+$/, "").replace(/\.$/, "");
}

// Round numbers for an axis; minStep 1 keeps counts of clients on whole numbers.
function niceTicks(lo, hi, count, minStep) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = Math.max((hi - lo) / Math.max(1, count), minStep || 0);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw && (!minStep || Number.isInteger(s))) || 10 * mag;
  const start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = start; v <= end + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

// ----------------------------------------------------------------------------------------- SVG

function el(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text != null) node.textContent = text;
  return node;
}

function clear(svg) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
}

function empty(svg, message) {
  clear(svg);
  svg.dataset.points = "0";
  svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, message));
}

function legend(svg, names) {
  const g = el("g", { class: "legend" });
  let x = W - PAD.right;
  for (let i = names.length - 1; i >= 0; i--) {
    const label = names[i].label;
    const width = 16 + label.length * 6.2;
    x -= width;
    g.appendChild(el("rect", { x, y: 8, width: 10, height: 10, rx: 2, fill: names[i].color }));
    g.appendChild(el("text", { x: x + 14, y: 17 }, label));
    x -= 10;
  }
  svg.appendChild(g);
}

// One frame: y grid and axis labels; x handled by the caller (continuous or per round).
function frame(svg, yTicks, yScale, yLabel, yFormat) {
  for (const t of yTicks) {
    const y = yScale(t);
    svg.appendChild(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "gridline" }));
    svg.appendChild(el("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, (yFormat || fmtTick)(t)));
  }
  svg.appendChild(el("line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom, class: "axis" }));
  svg.appendChild(el("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }));
  if (yLabel) svg.appendChild(el("text", { x: PAD.left, y: 16 }, yLabel));
}

// Lines over a continuous x (series: [{label, color, points: [[x, y], ...]}]).
function lineChart(svg, series, opts) {
  const pts = series.flatMap((s) => s.points);
  if (pts.length === 0) return empty(svg, opts.empty || "waiting for the first round");
  clear(svg);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const xMin = opts.xMin != null ? opts.xMin : Math.min(...xs);
  let xMax = Math.max(...xs);
  if (!(xMax > xMin)) xMax = xMin + 1;
  const yT = niceTicks(opts.yMin != null ? opts.yMin : Math.min(...ys), opts.yMax != null ? opts.yMax : Math.max(...ys), 5, opts.yStep);
  const y0 = yT[0], y1 = yT[yT.length - 1];
  const sx = (x) => PAD.left + ((x - xMin) / (xMax - xMin)) * (W - PAD.left - PAD.right);
  const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0 || 1)) * (H - PAD.top - PAD.bottom);
  frame(svg, yT, sy, opts.yLabel, opts.yFormat);
  for (const t of niceTicks(xMin, xMax, 6, opts.xStep)) {
    if (t < xMin - 1e-9 || t > xMax + 1e-9) continue;
    svg.appendChild(el("text", { x: sx(t), y: H - PAD.bottom + 16, "text-anchor": "middle" }, (opts.xFormat || fmtTick)(t)));
  }
  if (opts.xLabel) svg.appendChild(el("text", { x: W - PAD.right, y: H - 4, "text-anchor": "end" }, opts.xLabel));
  for (const s of series) {
    if (s.points.length === 0) continue;
    const d = s.points.map((p, i) => (i ? "L" : "M") + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ");
    svg.appendChild(el("path", { d, class: "line", stroke: s.color }));
    if (s.points.length <= 80) {
      for (const p of s.points) svg.appendChild(el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.6, fill: s.color }));
    }
  }
  if (series.length > 1 || opts.legend) legend(svg, series);
  svg.dataset.points = String(pts.length);
}

// Bars per round, stacked when there are several series (series: [{label, color, values: Map(round -> v)}]).
function barChart(svg, rounds, series, opts) {
  const total = (r) => series.reduce((a, s) => a + (s.values.get(r) || 0), 0);
  const shown = rounds.filter((r) => series.some((s) => s.values.has(r)));
  if (shown.length === 0) return empty(svg, opts.empty || "waiting for the first round");
  clear(svg);
  const yT = niceTicks(0, Math.max(...shown.map(total), opts.yMinTop || 0), 5, opts.yStep);
  const y1 = yT[yT.length - 1];
  const sy = (y) => H - PAD.bottom - (y / (y1 || 1)) * (H - PAD.top - PAD.bottom);
  frame(svg, yT, sy, opts.yLabel, opts.yFormat);
  const band = (W - PAD.left - PAD.right) / shown.length;
  const bar = Math.max(1, Math.min(28, band * 0.7));
  const labelEvery = Math.ceil(shown.length / 12);
  shown.forEach((r, i) => {
    const cx = PAD.left + band * (i + 0.5);
    let base = 0;
    for (const s of series) {
      const v = s.values.get(r) || 0;
      if (v <= 0) continue;
      const top = sy(base + v), bottom = sy(base);
      const rect = el("rect", { x: cx - bar / 2, y: top, width: bar, height: Math.max(0.5, bottom - top), fill: s.color });
      rect.appendChild(el("title", {}, `round ${r} · ${s.label}: ${(opts.yFormat || fmtTick)(v)}`));
      svg.appendChild(rect);
      base += v;
    }
    if (i % labelEvery === 0) svg.appendChild(el("text", { x: cx, y: H - PAD.bottom + 16, "text-anchor": "middle" }, String(r)));
  });
  svg.appendChild(el("text", { x: W - PAD.right, y: H - 4, "text-anchor": "end" }, "round"));
  if (series.length > 1 || opts.legend) legend(svg, series);
  svg.dataset.points = String(shown.length);
}

// ------------------------------------------------------------------------------------- render

function num(v) {
  return typeof v === "number" && isFinite(v) ? v : null;
}

function countOf(v) {
  if (Array.isArray(v)) return v.length;
  if (v && typeof v === "object") return Object.keys(v).length;
  return num(v);
}

function seriesOf(rows, key) {
  const values = new Map();
  for (const row of rows) {
    const v = typeof key === "function" ? key(row) : num(row[key]);
    if (v != null) values.set(row.round, v);
  }
  return values;
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node.textContent !== text) node.textContent = text;
}

function renderTiles(rows) {
  const s = state.status;
  const last = rows[rows.length - 1];
  const total = num(s.rounds_total);
  // The status may lag the round events (a round row arrives before the next status change).
  const known = [num(s.round), last ? last.round : null].filter((v) => v != null);
  const round = known.length ? Math.max(...known) : null;
  setText("round", round == null ? "–" : total ? `${round} / ${total}` : String(round));
  setText("stage", s.stage || "–");
  setText("connected", num(s.clients_connected) != null ? String(s.clients_connected) : "–");
  setText("registered", num(s.clients_registered) != null ? String(s.clients_registered) : "–");
  setText("dropped", num(s.clients_dropped) != null ? String(s.clients_dropped) : "–");
  const acc = last ? num(last.test_accuracy) : null;
  setText("accuracy", acc == null ? "–" : (acc * 100).toFixed(1) + " %");
  setText("elapsed", last ? fmtSeconds(num(last.elapsed_seconds)) : "–");
  const config = s.config && Object.keys(s.config).length ? JSON.stringify(s.config, null, 2) : "–";
  setText("config", config);
}

function render() {
  const rows = [...state.rounds.values()].sort((a, b) => a.round - b.round);
  const rounds = rows.map((r) => r.round);
  document.body.dataset.rounds = String(rows.length);
  renderTiles(rows);

  const acc = rows.filter((r) => num(r.test_accuracy) != null && num(r.elapsed_seconds) != null)
    .map((r) => [r.elapsed_seconds, r.test_accuracy * 100]);
  lineChart(document.getElementById("chart-accuracy"), [{ label: "test accuracy", color: COLORS[0], points: acc }],
    { yMin: 0, yMax: 100, yLabel: "accuracy (%)", xLabel: "elapsed", xMin: 0, xFormat: fmtAxisSeconds });

  barChart(document.getElementById("chart-duration"), rounds,
    [{ label: "round duration", color: COLORS[0], values: seriesOf(rows, "round_seconds") }],
    { yLabel: "seconds", yFormat: fmtTick });

  const clients = [
    { label: "participants", color: COLORS[2], points: [] },
    { label: "dropped", color: COLORS[1], points: [] },
  ];
  const connected = { label: "connected", color: COLORS[0], points: [] };
  for (const r of rows) {
    const p = countOf(r.participants), d = countOf(r.failures), c = num(r.clients_connected);
    if (p != null) clients[0].points.push([r.round, p]);
    if (d != null) clients[1].points.push([r.round, d]);
    if (c != null) connected.points.push([r.round, c]);
  }
  if (connected.points.length) clients.unshift(connected);
  lineChart(document.getElementById("chart-clients"), clients,
    { yMin: 0, yStep: 1, xStep: 1, yLabel: "clients", xLabel: "round", legend: true });

  const names = new Set();
  for (const m of state.stages.values()) for (const n of m.keys()) names.add(n);
  const ordered = [...STAGE_ORDER.filter((n) => names.has(n)), ...[...names].filter((n) => !STAGE_ORDER.includes(n)).sort()];
  const stageRounds = [...new Set([...rounds, ...state.stages.keys()])].sort((a, b) => a - b);
  barChart(document.getElementById("chart-stages"), stageRounds,
    ordered.map((n, i) => ({
      label: n.replace(/_/g, " "), color: COLORS[i % COLORS.length],
      values: new Map([...state.stages].filter(([, m]) => m.has(n)).map(([r, m]) => [r, m.get(n)])),
    })),
    { yLabel: "seconds", legend: true, empty: "no secure aggregation stages reported" });

  const stragglers = seriesOf(rows, (r) => countOf(r.stragglers));
  const keep = rows.filter((r) => num(r.mean_keep_ratio) != null).map((r) => [r.round, r.mean_keep_ratio]);
  document.getElementById("card-stragglers").hidden = stragglers.size === 0;
  document.getElementById("card-keep").hidden = keep.length === 0;
  if (stragglers.size) {
    barChart(document.getElementById("chart-stragglers"), rounds,
      [{ label: "stragglers", color: COLORS[1], values: stragglers }], { yLabel: "clients", yMinTop: 1, yStep: 1 });
  }
  if (keep.length) {
    lineChart(document.getElementById("chart-keep"), [{ label: "mean keep ratio", color: COLORS[3], points: keep }],
      { yMin: 0, yMax: 1, yLabel: "keep ratio", xLabel: "round", xStep: 1 });
  }
}

// -------------------------------------------------------------------------------- live stream

function setLive(on) {
  const badge = document.getElementById("connection");
  badge.textContent = on ? "live" : "reconnecting…";
  badge.className = "badge " + (on ? "on" : "off");
  document.body.dataset.live = on ? "1" : "0";
}

function listen() {
  const source = new EventSource("/api/events");
  const on = (name, fn) => source.addEventListener(name, (msg) => {
    let data;
    try { data = JSON.parse(msg.data); } catch (e) { return; }
    fn(data);
    schedule();
  });
  on("snapshot", applySnapshot);
  on("round", addRound);
  on("stage", addStage);
  on("status", (ev) => { const { event, ...rest } = ev; Object.assign(state.status, rest); });
  source.onopen = () => setLive(true);
  source.onerror = () => setLive(false); // EventSource retries by itself; the next snapshot resyncs
}

document.addEventListener("DOMContentLoaded", () => {
  render();
  listen();
});
