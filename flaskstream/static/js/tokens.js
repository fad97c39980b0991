// Token streaming panel: fetch + ReadableStream, typed out as chunks arrive.
//
// Stop calls AbortController.abort(): the browser closes the connection, the
// server's next write fails and its generator stops producing tokens.

import { $, errorText, formatSeconds, setState } from "./api.js";

export function initTokens(root) {
  const state = $("#tok-state", root);
  const output = $("#tok-output", root);
  const startButton = $("#tok-start", root);
  const stopButton = $("#tok-stop", root);
  const stats = {
    chunks: $("#tok-chunks", root), chars: $("#tok-chars", root),
    ttfb: $("#tok-ttfb", root), elapsed: $("#tok-elapsed", root),
  };
  let controller = null;

  function running(on) {
    startButton.disabled = on;
    stopButton.disabled = !on;
    output.classList.toggle("streaming", on);
  }

  async function stream(prompt) {
    controller = new AbortController();
    const started = performance.now();
    let chunks = 0;
    let text = "";
    output.textContent = "";
    for (const node of Object.values(stats)) node.textContent = "–";
    running(true);
    setState(state, "streaming", "streaming…");
    try {
      const response = await fetch(`/stream/tokens?prompt=${encodeURIComponent(prompt)}`, {
        signal: controller.signal,
        cache: "no-store",
      });
      if (!response.ok) throw new Error(await errorText(response));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (chunks === 0) stats.ttfb.textContent = formatSeconds((performance.now() - started) / 1000);
        chunks += 1;
        text += value;
        output.textContent = text;
        stats.chunks.textContent = String(chunks);
        stats.chars.textContent = String(text.length);
      }
      setState(state, "done", "done");
    } catch (error) {
      if (error.name === "AbortError") setState(state, "stopped", "stopped");
      else {
        setState(state, "error", "error");
        output.textContent = text + (text ? "\n\n" : "") + `⚠ ${error.message}`;
      }
    } finally {
      stats.elapsed.textContent = formatSeconds((performance.now() - started) / 1000);
      stats.chunks.textContent = String(chunks);
      stats.chars.textContent = String(text.length);
      controller = null;
      running(false);
    }
  }

  $("#tok-form", root).addEventListener("submit", (event) => {
    event.preventDefault();
    if (!controller) stream($("#tok-prompt", root).value);
  });
  stopButton.addEventListener("click", () => controller?.abort());
}
