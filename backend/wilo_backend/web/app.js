// wilo-backend live page: one WebSocket (the dashboard protocol), canvas charts, no libraries.
"use strict";

const CHANNELS = ["x", "y", "z", "magnitude"];
const COLORS = { x: "#d62728", y: "#2ca02c", z: "#1f77b4", magnitude: "#333333" };
const ZONE_FILL = { A: "rgba(46,157,79,0.13)", B: "rgba(155,191,47,0.13)", C: "rgba(230,154,28,0.15)", D: "rgba(210,60,44,0.15)" };
const WAVE_SECONDS = 2;
const WAVE_CAPACITY = 800 * WAVE_SECONDS;
const SPECTRUM_SECONDS = 10;
const SPECTRUM_EVERY_MS = 2000;
const TREND_EVERY_MS = 15000;

const params = new URLSearchParams(location.search);
const token = params.get("token");
const $ = (id) => document.getElementById(id);

const state = {
  ws: null,
  retryMs: 1000,
  timers: [],
  requestId: 0,
  wave: { t: new Float64Array(WAVE_CAPACITY), x: new Float64Array(WAVE_CAPACITY), y: new Float64Array(WAVE_CAPACITY), z: new Float64Array(WAVE_CAPACITY), magnitude: new Float64Array(WAVE_CAPACITY), count: 0, head: 0 },
  waveDirty: false,
  waveUpdates: 0,
  limits: [0.71, 1.8, 4.5],
  lastFeaturesTime: "",
};

// --- connection ------------------------------------------------------------------------

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/` + (token ? `?token=${encodeURIComponent(token)}` : "");
}

function send(command, fields = {}) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  const request = { command, request_id: `page-${++state.requestId}`, ...fields };
  if (token) request.token = token;
  state.ws.send(JSON.stringify(request));
}

function setConnection(kind, text) {
  const el = $("connection");
  el.className = `pill state-${kind}`;
  el.dataset.state = kind;
  el.textContent = text;
}

function connect() {
  setConnection("connecting", "connecting…");
  const ws = new WebSocket(socketUrl());
  state.ws = ws;
  ws.onopen = () => {
    state.retryMs = 1000;
    setConnection("open", "live");
    send("get_status");
    send("subscribe_live", { max_rate_hz: 800 });
    send("get_spectrum", { seconds: SPECTRUM_SECONDS });
    requestTrend();
    state.timers.push(setInterval(() => send("get_spectrum", { seconds: SPECTRUM_SECONDS }), SPECTRUM_EVERY_MS));
    state.timers.push(setInterval(requestTrend, TREND_EVERY_MS));
  };
  ws.onmessage = (event) => {
    let msg;
    try { msg = JSON.parse(event.data); } catch (err) { return; }
    handle(msg);
  };
  ws.onclose = (event) => {
    state.timers.forEach(clearInterval);
    state.timers = [];
    if ($("connection").dataset.state !== "unauthorized") {
      const seconds = Math.round(state.retryMs / 1000);
      setConnection("closed", `disconnected (code ${event.code}); retrying in ${seconds} s`);
    }
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 15000);
  };
}

function requestTrend() {
  send("get_features", { seconds: Number($("trend-span").value), max_points: 600 });
}

// --- messages --------------------------------------------------------------------------

function handle(msg) {
  switch (msg.type) {
    case "live_data": onLive(msg); break;
    case "status": onStatus(msg.data || {}); break;
    case "spectrum": drawSpectrum(msg); break;
    case "features": onTrend(msg); break;
    case "alert": onAlert(msg); break;
    case "error":
      if (/token|unauthori[sz]ed/i.test(msg.message || "")) setConnection("unauthorized", "token needed: add ?token=… to the URL");
      break;
    default: break; // new_file and anything newer: not shown here
  }
}

function onLive(msg) {
  const rows = msg.data || [];
  const w = state.wave;
  for (const row of rows) {
    const i = w.head;
    w.t[i] = Date.parse(row.timestamp);
    w.x[i] = row.x; w.y[i] = row.y; w.z[i] = row.z; w.magnitude[i] = row.acceleration;
    w.head = (i + 1) % WAVE_CAPACITY;
    w.count = Math.min(w.count + 1, WAVE_CAPACITY);
  }
  if (rows.length) {
    state.waveDirty = true;
    $("wave-info").textContent = `${msg.rate_hz} points/s, frame ${msg.seq}`;
  }
  if (msg.features) showFeatures(msg.features);
}

function showFeatures(f) {
  if (f.timestamp === state.lastFeaturesTime) return;
  state.lastFeaturesTime = f.timestamp;
  setZone(f.zone, f.vrms_mms);
  const body = document.querySelector("#features tbody");
  body.innerHTML = "";
  for (const ch of CHANNELS) {
    const tr = document.createElement("tr");
    const cells = [ch, f[`${ch}_rms_ms2`], f[`${ch}_peak_ms2`], f[`${ch}_crest`], f[`${ch}_vrms_mms`], f[`${ch}_dominant_hz`]];
    cells.forEach((value, k) => {
      const td = document.createElement("td");
      td.textContent = k === 0 ? value : fmt(value, k === 5 ? 1 : 3);
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
  $("features-time").textContent = `window of ${new Date(f.timestamp).toLocaleString()}`;
}

function setZone(zone, vrms) {
  const el = $("zone");
  el.className = `zone zone-${zone || "none"}`;
  el.dataset.zone = zone || "";
  el.textContent = zone ? `zone ${zone}` : "zone –";
  if (vrms !== undefined && vrms !== null) $("vrms").textContent = fmt(vrms, 2);
}

function onStatus(d) {
  if (d.zone !== undefined) setZone(d.zone, d.vrms_mms);
  if (Array.isArray(d.zone_limits_mms)) state.limits = d.zone_limits_mms;
  const s = d.sampler || {};
  const st = d.storage || {};
  const items = [
    ["sensor", d.connected ? "connected" : "NOT connected", d.connected],
    ["collection", d.paused ? "paused" : d.running ? "running" : "stopped", d.running && !d.paused],
    ["sampling rate", `${fmt(d.sampling_rate, 1)} Hz`],
    ["samples", fmt0(d.total_samples)],
    ["lost samples", fmt0(s.lost_samples), !(s.lost_samples > 0)],
    ["I2C errors", fmt0(s.i2c_errors), !(s.i2c_errors > 0)],
    ["sampler", `${s.alive === false ? "DEAD" : "alive"} · ${s.mode || "?"}${s.realtime ? " · realtime" : ""}`, s.alive !== false],
    ["clock error", `${fmt(s.clock_error_ppm, 0)} ppm`],
    ["storage", `${st.state || "?"}${st.error ? ": " + st.error : ""}`, st.state !== "degraded"],
    ["CSV files", `${fmt0(d.csv_files)}${d.latest_file ? " · latest " + d.latest_file : ""}`],
  ];
  const dl = $("health");
  dl.innerHTML = "";
  for (const [name, value, ok] of items) {
    const dt = document.createElement("dt"); dt.textContent = name;
    const dd = document.createElement("dd"); dd.textContent = value;
    if (ok === false) dd.className = "bad"; else if (ok === true) dd.className = "good";
    dl.append(dt, dd);
  }
}

function onAlert(msg) {
  const list = $("alerts");
  if (list.querySelector(".muted")) list.innerHTML = "";
  const li = document.createElement("li");
  li.textContent = `${new Date(msg.timestamp || Date.now()).toLocaleString()}: ${msg.message || msg.kind}`;
  list.prepend(li);
  if (msg.zone) setZone(msg.zone, msg.vrms_mms);
}

function onTrend(msg) {
  if (Array.isArray(msg.zone_limits_mms)) state.limits = msg.zone_limits_mms;
  const points = msg.data || [];
  if (points.length && !state.lastFeaturesTime) showFeatures(points[points.length - 1]);
  drawTrend(points, msg.seconds);
  $("trend-info").textContent = `${points.length} points, ${points.reduce((n, p) => n + (p.windows || 0), 0)} windows`;
}

// --- drawing ---------------------------------------------------------------------------

function fmt(v, digits) { return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "–"; }
function fmt0(v) { return typeof v === "number" ? v.toLocaleString() : "–"; }

function prepare(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "12px system-ui, sans-serif";
  return ctx;
}

function drawWave() {
  const canvas = $("waveform");
  const ctx = prepare(canvas);
  const w = state.wave;
  const n = w.count;
  if (n < 2) return;
  const lane = canvas.height / CHANNELS.length;
  const start = (w.head - n + WAVE_CAPACITY) % WAVE_CAPACITY;
  CHANNELS.forEach((ch, c) => {
    const data = w[ch];
    let mean = 0;
    for (let k = 0; k < n; k++) mean += data[(start + k) % WAVE_CAPACITY];
    mean /= n;
    let span = 1e-6;
    for (let k = 0; k < n; k++) span = Math.max(span, Math.abs(data[(start + k) % WAVE_CAPACITY] - mean));
    const mid = lane * c + lane / 2;
    ctx.strokeStyle = "#eceef2";
    ctx.beginPath(); ctx.moveTo(0, mid); ctx.lineTo(canvas.width, mid); ctx.stroke();
    ctx.strokeStyle = COLORS[ch];
    ctx.lineWidth = 1.2;
    ctx.beginPath();
    for (let k = 0; k < n; k++) {
      const px = (k / (WAVE_CAPACITY - 1)) * canvas.width;
      const py = mid - ((data[(start + k) % WAVE_CAPACITY] - mean) / span) * (lane * 0.45);
      if (k === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    }
    ctx.stroke();
    ctx.fillStyle = "#555";
    ctx.fillText(`${ch}  mean ${mean.toFixed(2)}  ±${span.toFixed(3)} m/s²`, 6, lane * c + 14);
  });
  state.waveUpdates += 1;
  canvas.dataset.updates = String(state.waveUpdates);
}

function drawSpectrum(msg) {
  const canvas = $("spectrum");
  const ctx = prepare(canvas);
  const f = msg.frequencies_hz || [];
  $("spectrum-seconds").textContent = fmt(msg.seconds, 0);
  if (!f.length || !(msg.x || []).length) { ctx.fillText("no spectrum yet", 10, 20); return; }
  const pad = { l: 44, r: 10, t: 10, b: 24 };
  const width = canvas.width - pad.l - pad.r;
  const height = canvas.height - pad.t - pad.b;
  const fMax = f[f.length - 1];
  let top = 1e-6;
  let best = { ch: "x", amp: -1 };
  for (const ch of CHANNELS) {
    for (let k = 1; k < f.length; k++) {
      top = Math.max(top, msg[ch][k]);
      if (ch !== "magnitude" && msg[ch][k] > best.amp) best = { ch, amp: msg[ch][k] };
    }
  }
  top *= 1.1;
  ctx.strokeStyle = "#e3e6eb"; ctx.fillStyle = "#666";
  for (let hz = 0; hz <= fMax; hz += 50) {
    const x = pad.l + (hz / fMax) * width;
    ctx.beginPath(); ctx.moveTo(x, pad.t); ctx.lineTo(x, pad.t + height); ctx.stroke();
    ctx.fillText(`${hz}`, x - 8, canvas.height - 8);
  }
  ctx.fillText(`${top.toPrecision(2)}`, 2, pad.t + 10);
  ctx.fillText("m/s²", 2, pad.t + 24);
  for (const ch of CHANNELS) {
    ctx.strokeStyle = COLORS[ch]; ctx.lineWidth = 1;
    ctx.beginPath();
    for (let k = 0; k < f.length; k++) {
      const x = pad.l + (f[k] / fMax) * width;
      const y = pad.t + height - (msg[ch][k] / top) * height;
      if (k === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    }
    ctx.stroke();
  }
  const peakHz = (msg.dominant_hz || {})[best.ch];
  if (typeof peakHz === "number") {
    const x = pad.l + (peakHz / fMax) * width;
    const y = pad.t + height - (best.amp / top) * height;
    ctx.fillStyle = "#111";
    ctx.fillText(`${peakHz.toFixed(1)} Hz`, Math.min(x + 4, canvas.width - 60), Math.max(y, pad.t + 12));
    $("spectrum-peak").textContent = peakHz.toFixed(1);
    $("spectrum-peak").dataset.hz = String(peakHz);
  }
}

function drawTrend(points, seconds) {
  const canvas = $("trend");
  const ctx = prepare(canvas);
  const pad = { l: 44, r: 10, t: 10, b: 24 };
  const width = canvas.width - pad.l - pad.r;
  const height = canvas.height - pad.t - pad.b;
  const now = Date.now();
  // A short history fills the width instead of hugging the right edge of a long, empty span.
  const first = points.length ? Date.parse(points[0].timestamp) : now;
  const t0 = Math.max(now - seconds * 1000, Math.min(first, now - 60000));
  let top = state.limits[2] * 1.25;
  for (const p of points) top = Math.max(top, (p.vrms_mms_max || 0) * 1.1);
  const yOf = (v) => pad.t + height - (v / top) * height;
  const bounds = [0, ...state.limits, top];
  ["A", "B", "C", "D"].forEach((zone, i) => {
    ctx.fillStyle = ZONE_FILL[zone];
    const y1 = yOf(Math.min(bounds[i + 1], top));
    ctx.fillRect(pad.l, y1, width, yOf(bounds[i]) - y1);
    ctx.fillStyle = "#777";
    if (bounds[i] < top) ctx.fillText(zone, pad.l + 4, yOf(bounds[i]) - 3);
  });
  ctx.fillStyle = "#666";
  ctx.fillText(`${top.toFixed(1)}`, 2, pad.t + 10);
  ctx.fillText("mm/s", 2, pad.t + 24);
  ctx.fillText(new Date(t0).toLocaleString(), pad.l, canvas.height - 6);
  ctx.fillText("now", canvas.width - 40, canvas.height - 6);
  if (!points.length) { ctx.fillText("no feature rows in this span yet", pad.l + 30, pad.t + 30); return; }
  const xOf = (p) => pad.l + ((Date.parse(p.timestamp) - t0) / (now - t0)) * width;
  for (const [key, color, lw] of [["vrms_mms_max", "rgba(120,120,120,0.7)", 1], ["vrms_mms", "#1f3f8f", 2]]) {
    ctx.strokeStyle = color; ctx.lineWidth = lw;
    ctx.beginPath();
    points.forEach((p, k) => { if (k === 0) ctx.moveTo(xOf(p), yOf(p[key])); else ctx.lineTo(xOf(p), yOf(p[key])); });
    ctx.stroke();
  }
  if (points.length < 60) {
    ctx.fillStyle = "#1f3f8f";
    for (const p of points) { ctx.beginPath(); ctx.arc(xOf(p), yOf(p.vrms_mms), 2.5, 0, 2 * Math.PI); ctx.fill(); }
  }
}

function frame() {
  if (state.waveDirty) { state.waveDirty = false; drawWave(); }
  requestAnimationFrame(frame);
}

$("host").textContent = location.host;
$("wave-seconds").textContent = String(WAVE_SECONDS);
$("trend-span").addEventListener("change", requestTrend);
requestAnimationFrame(frame);
connect();
