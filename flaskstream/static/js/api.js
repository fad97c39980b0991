// Shared helpers: the API token, fetch/XHR with it, event-channel subscriptions, formatting.
//
// Writes carry `Authorization: Bearer <token>` when the server asks for one.
// With READ_ACCESS=token reads need it too, but browsers cannot add headers to
// EventSource or media elements: the page trades the token for an HttpOnly
// session cookie once (POST /auth/session), which every same-origin read then carries.

const TOKEN_KEY = "flaskstream.apiToken";

export const $ = (selector, root = document) => root.querySelector(selector);

/** Create an element: el("li", {class: "x", text: "hi"}, child, ...). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

// --- API token -----------------------------------------------------------------

export const auth = {
  required: document.body.dataset.authRequired === "true" || document.body.dataset.readToken === "true",
  readRequired: document.body.dataset.readToken === "true",
  get token() {
    try { return localStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
  },
  set token(value) {
    try {
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
    } catch { /* private mode: keep it for this page only */ }
    memoryToken = value;
  },
};
let memoryToken = "";

function currentToken() {
  return auth.token || memoryToken;
}

/** Headers to add to a write: {Authorization} when a token is known, else {}. */
export function authHeaders() {
  const token = currentToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

let pendingAsk = null;

/** Show the token dialog once (concurrent callers share it); resolves to the token or "". */
export function askToken(message = "") {
  if (pendingAsk) return pendingAsk;
  const dialog = $("#token-dialog");
  const input = $("#token-input");
  $("#token-error").textContent = message;
  input.value = currentToken();
  pendingAsk = new Promise((resolve) => {
    const done = (token) => {
      dialog.removeEventListener("close", onClose);
      pendingAsk = null;
      resolve(token);
    };
    const onClose = () => {
      if (dialog.returnValue === "save" && input.value.trim()) {
        auth.token = input.value.trim();
        done(auth.token);
      } else {
        done("");
      }
    };
    dialog.addEventListener("close", onClose);
    $("#token-cancel").onclick = () => dialog.close("cancel");
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
  return pendingAsk;
}

/**
 * READ_ACCESS=token: turn the token into the session cookie, asking for one (again)
 * until the server takes it or the dialog is cancelled. Resolves to true when set.
 */
export async function ensureSession(message = "") {
  for (;;) {
    const token = (message ? "" : currentToken()) || await askToken(message);
    if (!token) return false;
    const response = await fetch("/auth/session", {
      method: "POST", credentials: "same-origin", headers: { Authorization: `Bearer ${token}` },
    });
    if (response.ok) return true;
    message = `That token was refused (${await errorText(response)}).`;
  }
}

/**
 * fetch() that adds the token to writes and, on a 401, asks for the token once
 * and retries (only when the body can be sent again: strings, Blobs, FormData).
 */
export async function api(path, options = {}) {
  const method = (options.method || "GET").toUpperCase();
  const write = !["GET", "HEAD", "OPTIONS"].includes(method);
  const send = () => fetch(path, {
    ...options,
    method,
    headers: { ...(options.headers || {}), ...(write ? authHeaders() : {}) },
  });
  let response = await send();
  if (response.status === 401 && write) {
    const token = await askToken(currentToken() ? "That token was refused." : "");
    if (token) response = await send();
  } else if (response.status === 401 && auth.readRequired) {
    if (await ensureSession("The session ended: a new token, please.")) response = await send();
  }
  return response;
}

/** The `{error: {code, message}}` body of a failed response, as one line of text. */
export async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return `${response.status} ${body.error.code}: ${body.error.message}`;
  } catch { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

// --- ids and subscriptions ---------------------------------------------------------

/** A random hex id for job/progress channels (crypto.randomUUID needs a secure context). */
export function newId(bytes = 8) {
  const raw = new Uint8Array(bytes);
  crypto.getRandomValues(raw);
  return Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function parseData(text) {
  try { return JSON.parse(text); } catch { return text; }
}

/**
 * Open an EventSource on one channel and resolve once it is open (or after
 * `timeout` ms, so a saturated browser connection pool cannot stall the caller).
 * `handlers` maps event names to functions of (data, event). A named `error`
 * event carries data; the EventSource's own connection errors do not.
 */
export function subscribe(channel, handlers, { timeout = 4000 } = {}) {
  const source = new EventSource(`/events/${encodeURIComponent(channel)}`);
  for (const [type, fn] of Object.entries(handlers)) {
    source.addEventListener(type, (event) => {
      if (event.data === undefined) return;
      fn(parseData(event.data), event);
    });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(source), timeout);
    source.addEventListener("open", () => { clearTimeout(timer); resolve(source); }, { once: true });
  });
}

// --- formatting -------------------------------------------------------------------

const UNITS = ["B", "KB", "MB", "GB", "TB"];

export function formatBytes(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "–";
  let i = 0;
  let value = Number(n);
  while (value >= 1000 && i < UNITS.length - 1) { value /= 1000; i += 1; }
  return `${value.toFixed(i === 0 || value >= 100 ? 0 : 1)} ${UNITS[i]}`;
}

export function formatRate(bytesPerSecond) {
  return bytesPerSecond > 0 ? `${formatBytes(bytesPerSecond)}/s` : "–";
}

export function formatCount(n) {
  return n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US");
}

export function formatSeconds(s) {
  if (!Number.isFinite(s)) return "–";
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(s < 10 ? 2 : 1)} s`;
}

export function setState(pill, state, label = state) {
  pill.dataset.state = state;
  pill.textContent = label;
}
