// Dashboard entry point: wires each panel and the page-level bits (health, API token).
//
// Each panel is its own module with an init function; a failure in one is shown
// in that panel and never stops the others.

import { $, askToken, auth, ensureSession, setState } from "./api.js";
import { initEvents } from "./events.js";
import { initTokens } from "./tokens.js";
import { initUploads } from "./uploads.js";
import { initMedia } from "./media.js";
import { initEtl } from "./etl.js";

const HEALTH_EVERY_MS = 15000;

async function checkHealth() {
  const pill = $("#health");
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    const body = await response.json();
    if (response.ok) setState(pill, "ok", "healthy");
    else setState(pill, "degraded", `db: ${body.db || "down"}`);
  } catch {
    setState(pill, "error", "server unreachable");
  }
}

function initToken() {
  const button = $("#token-button");
  if (!auth.required) return;
  button.hidden = false;
  button.addEventListener("click", () => askToken());
  // Ask once: a stored token is reused on every later visit (read mode: ensureSession asks).
  if (!auth.token && !auth.readRequired) askToken();
}

const panels = [
  ["#panel-events", initEvents],
  ["#panel-tokens", initTokens],
  ["#panel-uploads", initUploads],
  ["#panel-media", initMedia],
  ["#panel-etl", initEtl],
];

function startPanels() {
  for (const [selector, init] of panels) {
    const root = $(selector);
    try {
      init(root);
    } catch (error) {
      console.error(error);
      root.append(Object.assign(document.createElement("p"),
        { className: "error-text", textContent: `This panel failed to start: ${error.message}` }));
    }
  }
}

async function start() {
  initToken();
  checkHealth();
  setInterval(() => { if (!document.hidden) checkHealth(); }, HEALTH_EVERY_MS);
  // READ_ACCESS=token: the session cookie first, so the panels' EventSource and media load.
  if (auth.readRequired) await ensureSession();
  startPanels();
  document.documentElement.dataset.ready = "true";
}

start();
