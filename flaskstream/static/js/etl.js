// ETL panel: send a CSV to POST /etl/jobs and watch the job on SSE channel etl.<job>.
//
// The job id is chosen here so the page can subscribe before the first byte is
// sent: `progress` events carry {bytes, rows_read, rows_loaded, rows_rejected,
// rows_per_s}, then one `done` or `error`. The HTTP response is the summary.

import { $, api, el, errorText, formatBytes, formatCount, newId, setState, subscribe } from "./api.js";

const REJECT_EVERY = 50; // the generated sample has one bad row in 50

export function initEtl(root) {
  const state = $("#etl-state", root);
  const fileInput = $("#etl-file", root);
  const source = $("#etl-source", root);
  const start = $("#etl-start", root);
  const bar = $("#etl-bar", root);
  const fill = bar.querySelector(".done");
  const counts = {
    read: $("#etl-read", root), loaded: $("#etl-loaded", root), rejected: $("#etl-rejected", root),
    rate: $("#etl-rate", root), bytes: $("#etl-bytes", root),
  };
  const summaryList = $("#etl-summary", root);
  const rejectsLink = $("#etl-rejects", root);
  const exportLink = $("#etl-export", root);
  const errorBox = $("#etl-error", root);
  let chosen = null; // {blob, name}
  let running = false;

  function choose(blob, name) {
    chosen = { blob, name };
    source.textContent = `${name} · ${formatBytes(blob.size)}`;
    start.disabled = running;
  }

  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) choose(fileInput.files[0], fileInput.files[0].name);
  });

  $("#etl-generate", root).addEventListener("click", () => {
    const rows = Math.max(1, Math.min(5_000_000, Number($("#etl-rows", root).value) || 1000));
    fileInput.value = "";
    choose(sampleCsv(rows), `sample-${rows}.csv`);
    source.textContent += ` — ${formatCount(Math.floor(rows / REJECT_EVERY))} rows are invalid on purpose`;
  });

  function show(data) {
    if (data.rows_read !== undefined) counts.read.textContent = formatCount(data.rows_read);
    if (data.rows_loaded !== undefined) counts.loaded.textContent = formatCount(data.rows_loaded);
    if (data.rows_rejected !== undefined) counts.rejected.textContent = formatCount(data.rows_rejected);
    if (data.rows_per_s !== undefined) counts.rate.textContent = formatCount(data.rows_per_s);
    if (data.bytes !== undefined) {
      counts.bytes.textContent = formatBytes(data.bytes);
      const total = chosen?.blob.size || 0;
      // Gzip input: bytes counts the compressed stream, so this stays a fair fraction.
      const pct = total ? Math.min(100, (100 * data.bytes) / total) : 0;
      fill.style.width = `${pct}%`;
      bar.setAttribute("aria-valuenow", String(Math.floor(pct)));
    }
  }

  function showSummary(summary) {
    const keys = ["job", "table", "mode", "status", "rows_read", "rows_loaded", "rows_rejected",
      "bytes", "seconds", "rows_per_s", "mb_per_s"];
    const items = [];
    for (const key of keys) {
      if (summary[key] === undefined) continue;
      const value = typeof summary[key] === "number" && key !== "seconds" && key !== "mb_per_s"
        ? formatCount(summary[key]) : String(summary[key]);
      items.push(el("dt", { text: key.replaceAll("_", " ") }), el("dd", { "data-key": key, text: value }));
    }
    if (summary.error) items.push(el("dt", { text: "error" }), el("dd", { text: `${summary.error.code}: ${summary.error.message}` }));
    summaryList.replaceChildren(...items);
  }

  $("#etl-form", root).addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!chosen || running) return;
    running = true;
    start.disabled = true;
    errorBox.textContent = "";
    rejectsLink.hidden = true;
    summaryList.replaceChildren(el("dt", { text: "job" }), el("dd", { text: "starting…" }));
    for (const node of Object.values(counts)) node.textContent = "0";
    fill.style.width = "0%";
    bar.setAttribute("aria-valuenow", "0");
    const job = `dash-${newId(6)}`;
    const table = $("#etl-table", root).value;
    const mode = $("#etl-mode", root).value;
    root.dataset.job = job;
    setState(state, "running", "connecting…");
    const progress = await subscribe(`etl.${job}`, {
      progress: show,
      done: show,
      error: (data) => { show(data); if (data.error) errorBox.textContent = `${data.error.code}: ${data.error.message}`; },
    });
    setState(state, "running", "loading…");
    try {
      const response = await api(`/etl/jobs?table=${encodeURIComponent(table)}&mode=${mode}&job=${job}`, {
        method: "POST",
        headers: { "Content-Type": chosen.name.endsWith(".gz") ? "application/gzip" : "text/csv" },
        body: chosen.blob,
      });
      let summary = null;
      try { summary = await response.json(); } catch { /* not JSON */ }
      if (summary && summary.rows_read !== undefined) {
        show(summary);
        showSummary(summary);
      }
      const ok = response.ok && summary && summary.status === "done";
      if (ok) {
        fill.style.width = "100%";
        bar.setAttribute("aria-valuenow", "100");
        setState(state, "done", "done");
      } else {
        setState(state, "failed", "failed");
        if (summary?.error) errorBox.textContent = `${summary.error.code}: ${summary.error.message}`;
        else if (!response.ok) errorBox.textContent = await errorText(response);
      }
      rejectsLink.href = `/etl/jobs/${job}/rejects`;
      rejectsLink.textContent = `Rejects report (${formatCount(summary?.rows_rejected ?? 0)} rows)`;
      rejectsLink.hidden = false;
      exportLink.href = `/etl/export.csv?table=${encodeURIComponent(table)}`;
    } catch (error) {
      setState(state, "error", "error");
      errorBox.textContent = error.message;
    } finally {
      progress.close();
      running = false;
      start.disabled = !chosen;
    }
  });
}

/** A users CSV built in the browser: unique emails per run, one invalid row in REJECT_EVERY. */
function sampleCsv(rows) {
  const run = newId(3);
  const parts = ["email,age,name\n"];
  let chunk = [];
  for (let i = 0; i < rows; i += 1) {
    if (i % REJECT_EVERY === REJECT_EVERY - 1) {
      chunk.push(i % 2 ? `not-an-email-${i},30,Broken ${i}` : `bad.age.${i}.${run}@example.com,200,Too Old ${i}`);
    } else {
      chunk.push(`user${i}.${run}@example.com,${18 + (i % 60)},User ${i}`);
    }
    if (chunk.length === 10000) { parts.push(chunk.join("\n") + "\n"); chunk = []; }
  }
  if (chunk.length) parts.push(chunk.join("\n") + "\n");
  return new Blob(parts, { type: "text/csv" });
}
