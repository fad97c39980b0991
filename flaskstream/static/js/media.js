// Media panel: the files of GET /media/ and the uploaded audio/video in one player.
//
// The element does the Range requests itself (bytes=N- when it starts or seeks
// past what it has); the bar under the player draws its buffered ranges, so a
// seek shows a new island being fetched from the middle of the file.

import { $, el, formatBytes } from "./api.js";

export function initMedia(root) {
  const video = $("#media-video", root);
  const audio = $("#media-audio", root);
  const list = $("#media-list", root);
  const bufferedBar = $("#media-buffered", root);
  const timeLabel = $("#media-time", root);
  const durationLabel = $("#media-duration", root);
  const nameLabel = $("#media-name", root);
  const info = $("#media-info", root);
  let current = null;

  const player = () => (audio.hidden ? video : audio);

  function drawBuffered() {
    const media = player();
    const duration = media.duration;
    if (!Number.isFinite(duration) || duration <= 0) { bufferedBar.replaceChildren(); return; }
    const spans = [];
    for (let i = 0; i < media.buffered.length; i += 1) {
      const start = media.buffered.start(i) / duration;
      const end = media.buffered.end(i) / duration;
      spans.push(el("span", { style: `left:${start * 100}%;width:${(end - start) * 100}%` }));
    }
    spans.push(el("i", { style: `left:calc(${(media.currentTime / duration) * 100}% - 1px)` }));
    bufferedBar.replaceChildren(...spans);
    const islands = [];
    for (let i = 0; i < media.buffered.length; i += 1) {
      islands.push(`${media.buffered.start(i).toFixed(1)}–${media.buffered.end(i).toFixed(1)} s`);
    }
    if (current) {
      info.replaceChildren(
        el("dt", { text: "file" }), el("dd", { text: current.name }),
        el("dt", { text: "type" }), el("dd", { text: current.content_type }),
        el("dt", { text: "size" }), el("dd", { text: formatBytes(current.size) }),
        el("dt", { text: "buffered" }), el("dd", { "data-key": "buffered", text: islands.join(", ") || "–" }));
    }
    timeLabel.textContent = media.currentTime.toFixed(1);
    durationLabel.textContent = duration.toFixed(1);
  }

  for (const media of [video, audio]) {
    for (const type of ["progress", "timeupdate", "loadedmetadata", "seeked", "emptied"]) {
      media.addEventListener(type, drawBuffered);
    }
  }

  function load(item, button) {
    const isAudio = item.content_type.startsWith("audio/");
    for (const b of list.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
    video.pause();
    audio.pause();
    video.hidden = isAudio;
    audio.hidden = !isAudio;
    const media = player();
    media.src = item.src;
    media.dataset.name = item.name;
    nameLabel.textContent = item.name;
    current = item;
    drawBuffered();
  }

  function seek(to) {
    const media = player();
    if (!Number.isFinite(media.duration)) return;
    media.currentTime = Math.max(0, Math.min(media.duration - 0.05, to));
  }

  $("#media-middle", root).addEventListener("click", () => seek(player().duration / 2));
  $("#media-back", root).addEventListener("click", () => seek(player().currentTime - 5));
  $("#media-forward", root).addEventListener("click", () => seek(player().currentTime + 5));

  async function refresh() {
    const items = [];
    try {
      const response = await fetch("/media/", { cache: "no-store" });
      const { files } = await response.json();
      for (const f of files) {
        if (/^(audio|video)\//.test(f.content_type)) {
          items.push({ name: f.name, size: f.size, content_type: f.content_type, src: f.url, origin: "media" });
        }
      }
    } catch (error) {
      list.replaceChildren(el("li", { class: "error-text", text: `GET /media/: ${error.message}` }));
    }
    try {
      const response = await fetch("/uploads?limit=100", { cache: "no-store" });
      if (response.ok) {
        const { uploads } = await response.json();
        for (const u of uploads) {
          if (/^(audio|video)\//.test(u.content_type)) {
            // ?inline=1: uploads are attachments unless the type is safe to render.
            items.push({ name: u.filename, size: u.size, content_type: u.content_type,
              src: `${u.url}?inline=1`, origin: "upload" });
          }
        }
      }
    } catch { /* the media files still play */ }
    if (!items.length) {
      list.replaceChildren(el("li", { class: "muted small", text: "No audio or video found." }));
      return;
    }
    list.replaceChildren(...items.map((item) => {
      const button = el("button", {
        type: "button", "aria-pressed": String(current?.src === item.src), "data-src": item.src,
        title: `${item.content_type} · ${formatBytes(item.size)}`,
      }, el("span", { class: "name", text: item.name }),
      el("span", { class: "kind", text: item.origin === "upload" ? "upload" : item.content_type.split("/")[0] }));
      button.addEventListener("click", () => load(item, button));
      return el("li", {}, button);
    }));
    if (!current) {
      const first = items.find((i) => i.content_type.startsWith("video/mp4"))
        || items.find((i) => i.content_type.startsWith("video/")) || items[0];
      load(first, list.querySelector(`button[data-src="${CSS.escape(first.src)}"]`));
    }
  }

  $("#media-refresh", root).addEventListener("click", refresh);
  document.addEventListener("flaskstream:uploads-changed", refresh);
  refresh();
}
