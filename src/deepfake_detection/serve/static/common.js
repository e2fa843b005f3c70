// Shared by the pages: the optional API key (kept in this browser only) and API calls.
"use strict";
const keyInput = document.getElementById("api-key");
keyInput.value = localStorage.getItem("dfd-api-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("dfd-api-key", keyInput.value.trim()));

function apiHeaders() {
  const key = keyInput.value.trim();
  return key ? { "X-API-Key": key } : {};
}

// fetch + JSON; a non-2xx answer throws an Error carrying the server's message ({"detail": ...}),
// the status and Retry-After.
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...apiHeaders(), ...(options.headers || {}) } });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    error.retryAfter = Number(response.headers.get("Retry-After")) || 0; // seconds (429, 503)
    throw error;
  }
  return body;
}

function fmt(p) { return p === null || p === undefined ? "–" : Number(p).toFixed(2); }
