// Dashboard: polls the service's own /metrics (Prometheus text) and /v1/recent, charts them live.
"use strict";
const POLL_MS = 2000;
const POINTS = 90; // three minutes of history
const INFERENCE = new Set(["/v1/detect", "/v1/detect/batch"]);
const history = { throughput: [], p50: [], p95: [], fake: [] };
let previous = null;

// "name{a="x",b="y"} 1.5" lines -> [{name, labels, value}]
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const m of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2];
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

const sum = (samples, name, keep = () => true) =>
  samples.filter((s) => s.name === name && keep(s.labels)).reduce((a, s) => a + s.value, 0);

// Cumulative bucket counts {le: count} of the inference endpoints' latency histogram.
function buckets(samples) {
  const out = {};
  for (const s of samples) {
    if (s.name !== "dfd_request_duration_seconds_bucket" || !INFERENCE.has(s.labels.endpoint)) continue;
    out[s.labels.le] = (out[s.labels.le] || 0) + s.value;
  }
  return out;
}

// Prometheus' histogram_quantile: linear interpolation inside the bucket holding the quantile.
function quantile(q, counts) {
  const bounds = Object.keys(counts).map((le) => [le === "+Inf" ? Infinity : Number(le), counts[le]])
    .sort((a, b) => a[0] - b[0]);
  const total = bounds.length ? bounds[bounds.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0, lowerCount = 0;
  for (const [bound, count] of bounds) {
    if (count >= rank) {
      if (bound === Infinity) return lowerBound;
      return lowerBound + ((bound - lowerBound) * (rank - lowerCount)) / Math.max(count - lowerCount, 1e-9);
    }
    lowerBound = bound;
    lowerCount = count;
  }
  return lowerBound;
}

function push(series, value) {
  series.push(value);
  if (series.length > POINTS) series.shift();
}

function drawChart(id, lines, colours, maxHint) {
  const canvas = document.getElementById(id);
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const values = lines.flat().filter((v) => v !== null && Number.isFinite(v));
  const top = Math.max(maxHint || 0, ...values, 1e-9) * 1.1;
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px system-ui";
  ctx.fillText(top.toPrecision(3), 2, 10);
  lines.forEach((series, i) => {
    ctx.strokeStyle = colours[i];
    ctx.lineWidth = 2;
    ctx.beginPath();
    let pen = false;
    series.forEach((v, x) => {
      if (v === null || !Number.isFinite(v)) { pen = false; return; }
      const px = (x / (POINTS - 1)) * width, py = height - (v / top) * (height - 14);
      if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
      pen = true;
    });
    ctx.stroke();
  });
}

function show(id, value) { document.getElementById(id).textContent = value; }

async function pollMetrics() {
  const response = await fetch("/metrics");
  const samples = parseMetrics(await response.text());
  const now = performance.now();
  const current = { time: now, images: sum(samples, "dfd_images_total"), buckets: buckets(samples) };
  const model = samples.find((s) => s.name === "dfd_model_info");
  if (model) show("model", `model: ${model.labels.name} (${model.labels.arch}, ${model.labels.backend}) sha256 ${model.labels.sha256.slice(0, 16)}…`);
  show("images", current.images.toFixed(0));
  show("queue", sum(samples, "dfd_queue_depth").toFixed(0));
  show("errors", sum(samples, "dfd_request_errors_total").toFixed(0));
  const fakeRate = sum(samples, "dfd_fake_rate");
  show("fake-rate", `${(100 * fakeRate).toFixed(1)}%`);
  push(history.fake, fakeRate);
  if (previous) {
    const seconds = (now - previous.time) / 1000;
    const throughput = (current.images - previous.images) / seconds;
    const delta = {};
    for (const le of Object.keys(current.buckets)) delta[le] = current.buckets[le] - (previous.buckets[le] || 0);
    const p50 = quantile(0.5, delta), p95 = quantile(0.95, delta);
    push(history.throughput, throughput);
    push(history.p50, p50 === null ? null : p50 * 1000);
    push(history.p95, p95 === null ? null : p95 * 1000);
    show("throughput", throughput.toFixed(1));
    show("p50", p50 === null ? "–" : (p50 * 1000).toFixed(0));
    show("p95", p95 === null ? "–" : (p95 * 1000).toFixed(0));
  }
  previous = current;
  drawChart("chart-throughput", [history.throughput], ["#1d4ed8"]);
  drawChart("chart-latency", [history.p50, history.p95], ["#2a9d4b", "#d62828"]);
  drawChart("chart-fake", [history.fake], ["#d62828"], 1);
  document.body.dataset.polled = String(Number(document.body.dataset.polled || 0) + 1);
}

let recentAfter = 0; // after a 429: performance.now() before which /v1/recent is not asked again

async function pollRecent() {
  if (performance.now() < recentAfter) return;
  const body = document.querySelector("#recent tbody");
  try {
    const { detections } = await api("/v1/recent");
    body.replaceChildren(...detections.map((d) => {
      const row = document.createElement("tr");
      const verdict = d.status === "error" ? "error" : d.label || "no face";
      for (const text of [new Date(d.time * 1000).toLocaleTimeString(), d.source, d.name || "", verdict,
        fmt(d.fake_probability), d.faces, d.latency_ms]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      if (d.label === "fake") row.style.color = "var(--fake)";
      return row;
    }));
  } catch (err) {
    if (err.status === 429 || err.status === 503) recentAfter = performance.now() + 1000 * Math.max(err.retryAfter, 5);
    body.replaceChildren();
    const row = body.insertRow();
    row.insertCell().textContent = err.message;
  }
}

async function loop() {
  try { await Promise.all([pollMetrics(), pollRecent()]); } catch (err) { show("model", `metrics unavailable: ${err.message}`); }
  setTimeout(loop, POLL_MS);
}
loop();
