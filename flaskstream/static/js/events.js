// Events panel: a live channel feed through EventSource, a publish form, the tick demo.
//
// EventSource reconnects by itself and sends the last seen id as Last-Event-ID,
// so the server replays what was missed. A named event only reaches listeners
// registered for that name, so the feed listens to the common names plus every
// name published from this page.

import { $, api, el, ensureSession, errorText, parseData, setState } from "./api.js";

const FEED_LIMIT = 200;
const COMMON_TYPES = ["message", "reset", "progress", "done", "error", "tick", "notice", "update"];

export function initEvents(root) {
  const state = $("#ev-state", root);
  const feed = $("#ev-feed", root);
  const channelInput = $("#ev-channel", root);
  const counters = { count: $("#ev-count", root), lastId: $("#ev-last-id", root), reconnects: $("#ev-reconnects", root) };
  const publishResult = $("#ev-publish-result", root);

  let source = null;
  let channel = "";
  let lastId = "";
  let received = 0;
  let reconnects = 0;
  let wasOpen = false;
  const types = new Set(COMMON_TYPES);
  const refreshStats = showServerStats($("#ev-server", root));

  function show(event) {
    if (event.data === undefined) return;
    received += 1;
    if (event.lastEventId) lastId = event.lastEventId;
    counters.count.textContent = String(received);
    counters.lastId.textContent = lastId || "–";
    const empty = feed.querySelector(".empty");
    if (empty) empty.remove();
    const data = parseData(event.data);
    const text = typeof data === "string" ? data : JSON.stringify(data);
    const item = el("li", { class: "fresh", "data-id": event.lastEventId, "data-type": event.type },
      el("span", { class: "id", text: event.lastEventId ? `#${event.lastEventId}` : "" }),
      el("span", { class: "type", text: event.type }),
      el("span", { class: "data", text }),
      el("span", { class: "time", text: new Date().toLocaleTimeString() }));
    feed.prepend(item);
    while (feed.children.length > FEED_LIMIT) feed.lastElementChild.remove();
  }

  function listen(type) {
    if (type === "error") return; // handled with the connection errors below
    source?.addEventListener(type, show);
  }

  function connect() {
    const wanted = channelInput.value.trim();
    if (wanted !== channel) lastId = ""; // ids are global, but a new channel starts fresh
    disconnect();
    channel = wanted;
    // A manual reconnect resumes too: the query parameter does what the header does.
    const query = lastId ? `?lastEventId=${encodeURIComponent(lastId)}` : "";
    source = new EventSource(`/events/${encodeURIComponent(channel)}${query}`);
    wasOpen = false;
    setState(state, "connecting");
    source.addEventListener("open", () => {
      if (wasOpen) { reconnects += 1; counters.reconnects.textContent = String(reconnects); }
      wasOpen = true;
      setState(state, "open", `open · ${channel}`);
      refreshStats();
    });
    source.addEventListener("error", (event) => {
      if (event.data !== undefined) { show(event); return; } // a named "error" event
      if (source.readyState === EventSource.CLOSED) setState(state, "closed", "closed (server refused)");
      else setState(state, "reconnecting", "reconnecting…");
    });
    // READ_ACCESS=token: the server ends the stream at the token's exp. Close it (the
    // browser's own retry would carry an expired cookie and stop for good), ask for a
    // new token, and resume from the last id.
    source.addEventListener("auth-expired", () => {
      disconnect();
      setState(state, "reconnecting", "token expired…");
      ensureSession("The token expired: a new one, please.").then((ok) => { if (ok) connect(); });
    });
    for (const type of types) listen(type);
  }

  function disconnect() {
    if (source) source.close();
    source = null;
    setState(state, "closed");
  }

  $("#ev-connect", root).addEventListener("submit", (event) => { event.preventDefault(); connect(); });
  $("#ev-disconnect", root).addEventListener("click", disconnect);

  $("#ev-publish", root).addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("#ev-event", root).value.trim() || "message";
    const raw = $("#ev-data", root).value;
    if (!types.has(name)) { types.add(name); listen(name); }
    const target = channelInput.value.trim();
    const body = { data: parseData(raw) };
    if (name !== "message") body.event = name;
    publishResult.textContent = "publishing…";
    try {
      const response = await api(`/events/${encodeURIComponent(target)}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!response.ok) { publishResult.textContent = await errorText(response); return; }
      const { id } = await response.json();
      publishResult.textContent = `published #${id} to ${target}`;
      publishResult.dataset.id = id;
      refreshStats();
    } catch (error) {
      publishResult.textContent = `publish failed: ${error.message}`;
    }
  });

  initTick(root);
  connect();
}

const STATS_EVERY_MS = 5000;

/** The answering worker's own counters: open streams stay cheap, events keep flowing. */
function showServerStats(node) {
  async function refresh() {
    try {
      const response = await fetch("/events/stats", { cache: "no-store" });
      if (!response.ok) return;
      const stats = await response.json();
      const counters = stats.counters || {};
      node.replaceChildren(
        `worker ${stats.pid}: open streams `, el("b", { text: String(stats.open_streams ?? "–") }),
        " · published ", el("b", { text: String(counters.published ?? "–") }),
        " · delivered ", el("b", { text: String(counters.delivered ?? "–") }));
    } catch { /* the feed's own state says enough */ }
  }
  setInterval(() => { if (!document.hidden) refresh(); }, STATS_EVERY_MS);
  return refresh;
}

function initTick(root) {
  const button = $("#tick-toggle", root);
  const clock = $("#tick-clock", root);
  const beat = $("#tick-beat", root);
  const count = $("#tick-count", root);
  const lastId = $("#tick-id", root);
  let source = null;
  let ticks = 0;

  function stop() {
    source?.close();
    source = null;
    button.textContent = "Start tick demo";
    button.dataset.running = "false";
  }

  function start() {
    const interval = $("#tick-interval", root).value;
    ticks = 0;
    source = new EventSource(`/events/tick?interval=${encodeURIComponent(interval)}`);
    source.addEventListener("tick", (event) => {
      const data = parseData(event.data);
      ticks += 1;
      const ts = typeof data === "object" && data ? data.ts : undefined;
      const when = typeof ts === "number" ? new Date(ts < 1e12 ? ts * 1000 : ts) : new Date(ts || Date.now());
      clock.textContent = when.toLocaleTimeString([], { hour12: false });
      count.textContent = String(ticks);
      lastId.textContent = event.lastEventId || (data && data.id) || "–";
      beat.classList.remove("on");
      void beat.offsetWidth; // restart the animation
      beat.classList.add("on");
    });
    button.textContent = "Stop tick demo";
    button.dataset.running = "true";
  }

  button.addEventListener("click", () => (source ? stop() : start()));
}
