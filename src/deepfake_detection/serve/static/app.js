// Detect page: uploads (images -> /v1/detect, clips -> /v1/videos jobs) and the live webcam stream.
"use strict";
const results = document.getElementById("results");
const statusLine = document.getElementById("status");
const JOBS_KEY = "dfd-jobs";

// --- drawing a result over an image or a video -------------------------------------------------

// Boxes are positioned in percent of the image size, so they follow the element when it scales.
function drawBoxes(frame, result, explanations) {
  frame.querySelectorAll(".box, .heat").forEach((el) => el.remove());
  const [w, h] = result.image_size || [1, 1];
  const pct = (v, total) => `${(100 * v) / total}%`;
  for (const e of explanations || []) {
    const heat = document.createElement("img");
    heat.className = "heat";
    heat.src = e.heatmap;
    heat.alt = "heatmap of the evidence for the verdict";
    Object.assign(heat.style, { left: pct(e.box[0], w), top: pct(e.box[1], h),
      width: pct(e.box[2] - e.box[0], w), height: pct(e.box[3] - e.box[1], h) });
    frame.appendChild(heat);
  }
  for (const face of result.faces) {
    const fake = face.fake_probability >= result.threshold;
    const box = document.createElement("div");
    box.className = "box" + (fake ? " fake" : "");
    const [x1, y1, x2, y2] = face.box;
    Object.assign(box.style, { left: pct(x1, w), top: pct(y1, h), width: pct(x2 - x1, w), height: pct(y2 - y1, h) });
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = `${fake ? "fake" : "real"} ${fmt(face.fake_probability)}${face.blurry ? " blurry" : ""}`;
    box.appendChild(tag);
    frame.appendChild(box);
  }
}

function verdictText(result) {
  if (result.status === "error") return ["error", result.error];
  if (result.label === null) return ["error", "no face found"];
  let words = result.status === "no_face" ? " (no face found; whole image scored)" : "";
  for (const warning of result.warnings || []) words += `. Warning: ${warning}`;
  return [result.label, `${result.label.toUpperCase()}: fake probability ${fmt(result.fake_probability)}` +
    ` (threshold ${fmt(result.threshold)}, ${result.faces.length} face${result.faces.length === 1 ? "" : "s"})${words}`];
}

function setVerdict(el, result) {
  const [cls, text] = verdictText(result);
  el.className = "verdict " + cls;
  el.textContent = text;
}

function card(title) {
  const div = document.createElement("div");
  div.className = "card";
  const h = document.createElement("h3");
  h.textContent = title;
  const verdict = document.createElement("p");
  verdict.className = "verdict";
  div.append(h, verdict);
  results.prepend(div);
  return { div, verdict };
}

// --- images ----------------------------------------------------------------------------------------

async function detectImage(file) {
  const { div, verdict } = card(file.name);
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = document.createElement("img");
  img.alt = file.name;
  img.src = URL.createObjectURL(file);
  frame.appendChild(img);
  div.insertBefore(frame, verdict);
  verdict.textContent = "scoring…";
  const form = new FormData();
  form.append("file", file);
  const explain = document.getElementById("explain").checked;
  try {
    const result = await api("/v1/detect" + (explain ? "?explain=true" : ""), { method: "POST", body: form });
    drawBoxes(frame, result, result.explanations);
    setVerdict(verdict, result);
  } catch (err) {
    verdict.className = "verdict error";
    verdict.textContent = err.message;
  }
}

// --- clips: a job on the server, polled; its id survives a page reload ------------------------------

function savedJobs() { return JSON.parse(localStorage.getItem(JOBS_KEY) || "[]"); }
function saveJobs(jobs) { localStorage.setItem(JOBS_KEY, JSON.stringify(jobs.slice(-20))); }

async function submitClip(file) {
  const form = new FormData();
  form.append("file", file);
  const { div, verdict } = card(file.name);
  verdict.textContent = "uploading…";
  try {
    const job = await api("/v1/videos", { method: "POST", body: form });
    saveJobs([...savedJobs(), { id: job.id, name: file.name }]);
    div.remove();
    followJob(job.id, file.name);
  } catch (err) {
    verdict.className = "verdict error";
    verdict.textContent = err.message;
  }
}

function followJob(id, name) {
  const { div, verdict } = card(name);
  div.id = "job-" + id;
  const bar = document.createElement("progress");
  div.insertBefore(bar, verdict);
  // Polls back off from 1 s to 5 s (a long clip costs few requests, which count against a rate
  // limit), and wait at least as long as a 429 or 503 answer's Retry-After says.
  let delay = 1000;
  const pollLater = (minimum = 0) => {
    setTimeout(poll, Math.max(delay, minimum));
    delay = Math.min(5000, delay * 1.5);
  };
  const poll = async () => {
    let job;
    try {
      job = await api(`/v1/jobs/${id}`);
    } catch (err) {
      verdict.className = "verdict error";
      verdict.textContent = err.status === 404 ? "this job has expired" : err.message;
      if (err.status === 404) saveJobs(savedJobs().filter((j) => j.id !== id));
      else pollLater(1000 * (err.retryAfter || 3));
      return;
    }
    const { done, total } = job.progress;
    if (total) { bar.max = total; bar.value = done; }
    if (job.state === "queued" || job.state === "running") {
      verdict.className = "verdict";
      verdict.textContent = `${job.state}… ${total ? `${done}/${total} frames` : ""}`;
      pollLater();
      return;
    }
    bar.remove();
    if (job.result) {
      setVerdict(verdict, job.result);
      const tl = document.createElement("div");
      tl.className = "timeline";
      tl.title = "fake probability per second";
      for (const point of job.result.timeline || []) {
        const bin = document.createElement("span");
        bin.style.height = `${Math.max(2, 100 * (point.fake_probability || 0))}%`;
        if (point.fake_probability >= job.result.threshold) bin.className = "fake";
        bin.title = `${point.second}s: ${fmt(point.fake_probability)}`;
        tl.appendChild(bin);
      }
      div.appendChild(tl);
    }
    if (job.state === "error") {
      verdict.className = "verdict error";
      verdict.textContent = job.error;
    }
  };
  poll();
}

// --- file input and drag-and-drop ------------------------------------------------------------------

function handleFiles(files) {
  statusLine.textContent = "";
  for (const file of files) {
    if (file.type.startsWith("video/") || /\.(mp4|mov|avi|mkv|webm|m4v)$/i.test(file.name)) submitClip(file);
    else detectImage(file);
  }
}

const input = document.getElementById("files");
input.addEventListener("change", () => { handleFiles([...input.files]); input.value = ""; });
const drop = document.getElementById("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handleFiles([...e.dataTransfer.files]); });
for (const job of savedJobs()) followJob(job.id, job.name);

// --- webcam: JPEG frames over a WebSocket, overlays from the answers --------------------------------

const camButton = document.getElementById("webcam");
const live = document.getElementById("live");
const video = document.getElementById("video");
const liveStats = document.getElementById("live-stats");
const MAX_IN_FLIGHT = 2; // frames sent but not answered; the server keeps only the newest anyway
const SEND_WIDTH = 480; // webcam faces are large: a smaller frame halves the work and keeps them
let stream = null, socket = null;

async function startWebcam() {
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    liveStats.textContent = `no camera: ${err.message}`;
    return;
  }
  video.srcObject = stream;
  live.hidden = false;
  camButton.textContent = "Stop webcam";
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const key = keyInput.value.trim();
  // Browsers cannot set headers on a WebSocket: the key travels as a subprotocol, not in the URL.
  socket = new WebSocket(`${scheme}://${location.host}/v1/stream`, key ? ["dfd", "dfd-key." + key] : ["dfd"]);
  socket.binaryType = "arraybuffer";
  const canvas = document.createElement("canvas");
  let inFlight = 0, answered = 0, dropped = 0, since = performance.now();
  const sendFrame = () => {
    if (!socket || socket.readyState !== WebSocket.OPEN || inFlight >= MAX_IN_FLIGHT || !video.videoWidth) return;
    const scale = Math.min(1, SEND_WIDTH / video.videoWidth);
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    inFlight += 1;
    canvas.toBlob((blob) => { if (blob && socket && socket.readyState === WebSocket.OPEN) socket.send(blob); else inFlight -= 1; },
      "image/jpeg", 0.7);
  };
  socket.onmessage = (event) => {
    const reply = JSON.parse(event.data);
    inFlight = Math.max(0, inFlight - 1 - (reply.dropped - dropped)); // dropped frames get no answer
    dropped = reply.dropped;
    answered += 1;
    if (reply.result) {
      drawBoxes(live, reply.result);
      live.dataset.label = reply.result.label || "none";
    }
    const seconds = (performance.now() - since) / 1000;
    const fps = answered / seconds;
    live.dataset.fps = fps.toFixed(1);
    live.dataset.answered = String(answered);
    liveStats.textContent = `${fps.toFixed(1)} frames/s, ${dropped} dropped` + (reply.error ? `, ${reply.error}` : "");
    sendFrame();
  };
  const mine = socket;
  socket.onclose = (event) => { // the server closed it (refused key, rate limit, restart): stop the camera too
    if (socket !== mine) return; // an earlier session's socket
    stopWebcam();
    if (event.reason) liveStats.textContent = `stream closed: ${event.reason}`;
  };
  socket.onopen = () => { since = performance.now(); };
  const tick = () => { if (!stream) return; sendFrame(); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}

function stopWebcam() {
  if (socket) socket.close();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  socket = stream = null;
  live.hidden = true;
  camButton.textContent = "Start webcam";
}

camButton.addEventListener("click", () => (stream ? stopWebcam() : startWebcam()));
