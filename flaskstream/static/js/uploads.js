// Uploads panel: picker + drop zone, one transfer row per file, the stored-uploads list.
//
// Plain uploads: XMLHttpRequest multipart POST /uploads?progress=<id>. The bar
// has two layers: light = bytes the browser has sent (xhr.upload progress),
// solid = bytes the server has received and written (its `progress` events on SSE channel
// uploads.<id>). Cancel aborts the request; the server deletes the staging file.
//
// Resumable uploads: tus-js-client against /uploads/tus/. It remembers each
// upload's URL in localStorage (keyed by a file fingerprint), so after a reload
// choosing the same file again continues from the server's offset.
//
// Files go one at a time: a browser opens at most six HTTP/1.1 connections per
// host and each transfer uses two (the body and its progress stream).

import {
  $, api, askToken, authHeaders, el, errorText, formatBytes, formatRate, newId, setState, subscribe,
} from "./api.js";

const TUS_ENDPOINT = "/uploads/tus/";
const TUS_CHUNK = 16 * 1024 * 1024;
const queue = [];
let busy = false;

export function initUploads(root) {
  const input = $("#up-input", root);
  const drop = $("#up-drop", root);
  const list = $("#up-transfers", root);
  const resumable = $("#up-resumable", root);

  const tools = $("#up-transfer-tools", root);
  const finishedStates = ["stored", "failed", "cancelled"];

  function updateTools() {
    const rows = [...list.children];
    const finished = rows.filter((row) => finishedStates.includes(row.dataset.state));
    tools.hidden = rows.length === 0;
    $("#up-transfer-count", root).textContent =
      `${rows.length} transfer${rows.length === 1 ? "" : "s"}, ${finished.length} finished`;
  }
  new MutationObserver(updateTools).observe(list, { childList: true, subtree: true, attributeFilter: ["data-state"] });
  $("#up-clear", root).addEventListener("click", () => {
    for (const row of [...list.children]) if (finishedStates.includes(row.dataset.state)) row.remove();
  });

  function enqueue(files) {
    for (const file of files) {
      const row = transferRow(file, resumable.checked);
      list.prepend(row.node);
      queue.push({ file, row, resumable: resumable.checked });
    }
    pump();
  }

  async function pump() {
    if (busy) return;
    busy = true;
    try {
      while (queue.length) {
        const job = queue.shift();
        if (job.row.cancelled) continue;
        try {
          await (job.resumable ? uploadTus(job.file, job.row) : uploadPlain(job.file, job.row));
        } catch (error) {
          job.row.fail(error.message || String(error));
        }
        refreshList(root);
        if (job.resumable) showPendingTus(root);
      }
    } finally {
      busy = false;
    }
  }

  input.addEventListener("change", () => { enqueue([...input.files]); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer?.files?.length) enqueue([...event.dataTransfer.files]);
  });
  $("#up-refresh", root).addEventListener("click", () => refreshList(root));
  resumable.addEventListener("change", () => showPendingTus(root));
  refreshList(root);
  showPendingTus(root);
}

// --- one transfer row ----------------------------------------------------------------

function transferRow(file, resumable) {
  const state = el("span", { class: "pill", "data-state": "waiting", text: "queued" });
  const sent = el("span", { class: "sent" });
  const stored = el("span", { class: "done" });
  const bar = el("div", {
    class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
    "aria-valuenow": "0", "aria-label": `Upload of ${file.name}`, "data-server-events": "0",
  }, sent, stored);
  const percent = el("span", { class: "percent", text: "0%" });
  const speed = el("span", { class: "speed" });
  const serverBytes = el("span", { class: "server-bytes" });
  const result = el("div", { class: "result" });
  const cancel = el("button", { type: "button", class: "small danger", text: "Cancel" });
  const node = el("li", { class: "transfer", "data-name": file.name },
    el("div", { class: "head" },
      el("span", { class: "name", text: file.name, title: file.name }),
      el("span", { class: "muted small", text: formatBytes(file.size) + (resumable ? " · tus" : "") }),
      state, cancel),
    bar,
    el("div", { class: "meta" }, percent, speed, serverBytes),
    result);

  const row = {
    node, cancelled: false, onCancel: null, serverEvents: 0, started: 0,
    setState(name, label) { setState(state, name, label); node.dataset.state = name; },
    sent(loaded, total) {
      const pct = total ? Math.min(100, (100 * loaded) / total) : 0;
      sent.style.width = `${pct}%`;
      bar.setAttribute("aria-valuenow", String(Math.floor(pct)));
      percent.textContent = `${Math.floor(pct)}%`;
      const seconds = (performance.now() - row.started) / 1000;
      if (seconds > 0.2) speed.textContent = formatRate(loaded / seconds);
    },
    stored(bytes, total) {
      row.serverEvents += 1;
      bar.dataset.serverEvents = String(row.serverEvents);
      const pct = total ? Math.min(100, (100 * bytes) / total) : 0;
      stored.style.width = `${pct}%`;
      serverBytes.textContent = `server received ${formatBytes(bytes)}`;
    },
    succeed(file) {
      sent.style.width = "100%";
      stored.style.width = "100%";
      bar.setAttribute("aria-valuenow", "100");
      percent.textContent = "100%";
      const seconds = (performance.now() - row.started) / 1000;
      speed.textContent = seconds > 0 ? `average ${formatRate(file.size / seconds)}` : "";
      cancel.remove();
      row.setState("stored", "stored");
      result.replaceChildren(
        el("div", { class: "meta" },
          el("span", { text: "size " }, el("b", { class: "size", text: String(file.size) })),
          el("span", { text: `${formatBytes(file.size)}` }),
          file.url ? el("a", { href: file.url, text: "download" }) : null),
        el("div", { class: "sha", title: "SHA-256 computed by the server while streaming" },
          "sha256 ", el("span", { class: "sha256", text: file.sha256 || "–" })));
      document.dispatchEvent(new CustomEvent("flaskstream:uploads-changed"));
    },
    fail(message) {
      cancel.remove();
      row.setState("failed", "failed");
      result.replaceChildren(el("div", { class: "error-text", text: message }));
    },
    cancelledDone(message) {
      cancel.remove();
      row.setState("cancelled", "cancelled");
      result.replaceChildren(el("div", { class: "muted small", text: message }));
    },
  };
  cancel.addEventListener("click", () => {
    row.cancelled = true;
    if (row.onCancel) row.onCancel();
    else row.cancelledDone("cancelled before it started");
  });
  return row;
}

// --- plain multipart upload ------------------------------------------------------------

async function uploadPlain(file, row) {
  const id = newId();
  row.setState("uploading", "connecting…");
  const progress = await subscribe(`uploads.${id}`, {
    progress: (data) => row.stored(data.bytes, data.total),
  });
  try {
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const outcome = await sendMultipart(file, row, id);
      if (outcome.status === 401 && attempt === 0) {
        if (await askToken(authHeaders().Authorization ? "That token was refused." : "")) continue;
      }
      return finish(outcome, row);
    }
  } finally {
    progress.close();
  }
}

function sendMultipart(file, row, id) {
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/uploads?progress=${id}`);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) row.sent(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => resolve({ status: xhr.status, body: xhr.response }));
    xhr.addEventListener("error", () => resolve({ status: 0, error: "network error" }));
    xhr.addEventListener("abort", () => resolve({ status: 0, aborted: true }));
    row.onCancel = () => xhr.abort();
    row.started = performance.now();
    row.setState("uploading", "uploading");
    xhr.send(form);
  });
}

function finish(outcome, row) {
  row.onCancel = null;
  if (outcome.aborted) {
    row.cancelledDone("cancelled — the server discarded the partial file");
  } else if (outcome.status === 201 && outcome.body?.files?.length) {
    row.succeed(outcome.body.files[0]);
  } else if (outcome.status === 0) {
    row.fail(outcome.error);
  } else {
    const error = outcome.body?.error;
    row.fail(error ? `${outcome.status} ${error.code}: ${error.message}` : `HTTP ${outcome.status}`);
  }
}

// --- resumable (tus) -------------------------------------------------------------------

function uploadTus(file, row) {
  const tus = window.tus;
  if (!tus || !tus.isSupported) throw new Error("tus-js-client is not available in this browser");
  return new Promise((resolve) => {
    const upload = new tus.Upload(file, {
      endpoint: TUS_ENDPOINT,
      chunkSize: TUS_CHUNK,
      retryDelays: [0, 1000, 3000, 5000],
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      headers: authHeaders(),
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onProgress(sent, total) { row.sent(sent, total); },
      // The offset the server acknowledged after each PATCH: bytes it has made durable.
      onChunkComplete(_chunk, accepted, total) { row.stored(accepted, total); },
      async onSuccess() {
        try {
          row.succeed(await tusResult(upload, file));
        } catch (error) {
          row.fail(error.message);
        }
        resolve();
      },
      onError(error) {
        const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
        row.fail(status === 401 ? "401: set the API token (button at the top) and retry"
          : `${error.message}`.split("\n")[0]);
        resolve();
      },
    });
    row.onCancel = () => {
      // abort(true) also sends DELETE (tus termination): nothing stays on the server.
      upload.abort(true).then(
        () => row.cancelledDone("cancelled — the server deleted the partial upload"),
        (error) => row.cancelledDone(`cancelled (termination failed: ${error.message})`));
      resolve();
    };
    row.setState("uploading", "resumable");
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) {
        upload.resumeFromPreviousUpload(previous[0]);
        row.setState("uploading", "resuming");
        row.node.dataset.resumed = "true";
      }
      row.started = performance.now();
      upload.start();
    });
  });
}

/** The stored upload behind a finished tus upload: it keeps the tus upload's id. */
async function tusResult(upload, file) {
  const id = decodeURIComponent(new URL(upload.url, location.href).pathname.split("/").pop());
  const response = await fetch(`/uploads/${encodeURIComponent(id)}`, { cache: "no-store" });
  if (!response.ok) throw new Error(`upload finished but ${await errorText(response)}`);
  const stored = await response.json();
  if (stored.size !== file.size) throw new Error(`server stored ${stored.size} of ${file.size} bytes`);
  return stored;
}

async function showPendingTus(root) {
  const box = $("#up-pending", root);
  const tus = window.tus;
  if (!tus?.defaultOptions?.urlStorage) return;
  try {
    const stored = await tus.defaultOptions.urlStorage.findAllUploads();
    const pending = stored.filter((u) => (u.uploadUrl || "").includes(TUS_ENDPOINT));
    box.hidden = pending.length === 0;
    if (pending.length) {
      const names = pending.map((u) => u.metadata?.filename || "?").join(", ");
      box.textContent = `Interrupted resumable upload${pending.length > 1 ? "s" : ""}: ${names}. `
        + "Tick “Resumable” and choose the same file again to continue where it stopped.";
    }
  } catch { box.hidden = true; }
}

// --- stored uploads --------------------------------------------------------------------

export async function refreshList(root) {
  const body = $("#up-list tbody", root);
  try {
    const response = await fetch("/uploads?limit=100", { cache: "no-store" });
    if (!response.ok) throw new Error(await errorText(response));
    const { uploads } = await response.json();
    if (!uploads.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: "4", class: "muted", text: "Nothing stored yet." })));
      return;
    }
    body.replaceChildren(...uploads.map((upload) => el("tr", { "data-id": upload.id },
      el("td", { class: "name" }, el("a", { href: upload.url, title: upload.filename, text: upload.filename })),
      el("td", { class: "num", text: formatBytes(upload.size) }),
      el("td", { class: "mono", title: upload.sha256, text: `${upload.sha256.slice(0, 12)}…` }),
      el("td", { class: "num" }, el("button", {
        type: "button", class: "small danger", text: "Delete",
        onclick: () => deleteUpload(root, upload),
      })))));
  } catch (error) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "4", class: "error-text", text: error.message })));
  }
}

async function deleteUpload(root, upload) {
  const response = await api(`/uploads/${encodeURIComponent(upload.id)}`, { method: "DELETE" });
  if (!response.ok && response.status !== 404) alert(await errorText(response));
  await refreshList(root);
  document.dispatchEvent(new CustomEvent("flaskstream:uploads-changed"));
}
