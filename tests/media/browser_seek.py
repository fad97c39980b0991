"""Play and seek ``<video>`` sources in headless Chromium; print JSON results.

Run as a subprocess by ``test_browser_seek.py``: Playwright's sync API allows
one driver per process, and the e2e tests' session browser owns that one.

    python -m tests.media.browser_seek PAGE_URL SRC [SRC...]
"""

from __future__ import annotations

import json
import sys

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]

SEEK = """
async ([src, target]) => {
  const v = document.createElement('video');
  v.muted = true; v.preload = 'auto'; v.src = src;
  document.body.appendChild(v);
  const once = (name) => new Promise((ok, bad) => {
    v.addEventListener(name, ok, {once: true});
    v.addEventListener('error', () => bad(new Error(src + ': ' + (v.error && v.error.message))),
                       {once: true});
  });
  await once('loadedmetadata');
  const duration = v.duration;
  // The frame at the target is presented after 'seeked'; wait for it (bounded).
  const presented = new Promise((ok) => {
    if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(() => ok(true));
    setTimeout(() => ok(false), 5000);
  });
  v.currentTime = target;
  await once('seeked');
  if (v.readyState < 2) await once('loadeddata');
  await presented;
  const frame = document.createElement('canvas');
  frame.width = v.videoWidth; frame.height = v.videoHeight;
  frame.getContext('2d').drawImage(v, 0, 0);
  const pixels = frame.getContext('2d').getImageData(0, 0, frame.width, frame.height).data;
  let lit = 0; for (let i = 0; i < pixels.length; i += 4) lit += pixels[i] + pixels[i+1] + pixels[i+2];
  return {src, duration, currentTime: v.currentTime, readyState: v.readyState,
          width: v.videoWidth, litPixels: lit > 0};
}
"""


def main() -> None:
    page_url, sources = sys.argv[1], sys.argv[2:]
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(page_url)
            can_play = page.evaluate("""() => {
                const v = document.createElement('video');
                return {mp4: v.canPlayType('video/mp4; codecs="avc1.4D401E, mp4a.40.2"'),
                        webm: v.canPlayType('video/webm; codecs="vp8, opus"')};
            }""")
            results = []
            for src in sources:
                kind = "mp4" if src.endswith(".mp4") else "webm"
                if not can_play[kind]:
                    results.append({"src": src, "skipped": f"{kind} not playable in this Chromium"})
                    continue
                results.append(page.evaluate(SEEK, [src, 4.5]))
            print(json.dumps(results))
        finally:
            browser.close()


if __name__ == "__main__":
    main()
