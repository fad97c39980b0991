"""The dashboard page without a browser: every asset it references exists and is served
with a type the browser will accept (a module script with a non-JavaScript type does
not run), and the API-token flag follows the configuration.

These run everywhere, Chromium or not, so a broken link fails fast even where the
browser tests are skipped.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flaskstream import create_app, db

STATIC_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
}
IMPORT_RE = re.compile(r"""^\s*import\s[^;]*?from\s+["'](\./[^"']+)["']""", re.M)


class AssetLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.assets: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.assets.append((f"script:{values.get('type') or 'classic'}", str(values["src"])))
        if tag == "link" and values.get("rel") == "stylesheet":
            self.assets.append(("stylesheet", str(values["href"])))


def page_assets(client: FlaskClient) -> tuple[str, list[tuple[str, str]]]:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    parser = AssetLinks()
    parser.feed(html)
    return html, parser.assets


def test_every_asset_of_the_page_is_served_with_a_usable_type(client: FlaskClient) -> None:
    html, assets = page_assets(client)
    kinds = {kind for kind, _ in assets}
    assert kinds == {"stylesheet", "script:classic", "script:module"}
    assert all(url.startswith("/static/") for _, url in assets)  # nothing from a CDN
    assert "http://" not in html and "https://" not in html
    csp = re.search(r'http-equiv="Content-Security-Policy"\s+content="([^"]+)"', html)
    assert csp, "the page pins every resource to its own origin"
    directives = dict(d.strip().split(" ", 1) for d in csp.group(1).split(";"))
    assert directives["script-src"] == "'self'"  # no inline or eval'd script, no CDN
    assert directives["connect-src"] == "'self'"
    assert "<script>" not in html

    seen: set[str] = set()
    queue = [url for _, url in assets]
    while queue:  # follow the module graph: app.js imports the panels, they import api.js
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        response = client.get(url)
        assert response.status_code == 200, url
        suffix = url[url.rfind("."):]
        assert response.mimetype in STATIC_TYPES[suffix], (url, response.mimetype)
        if suffix == ".js" and "/vendor/" not in url:
            body = response.get_data(as_text=True)
            base = url.rsplit("/", 1)[0]
            queue += [f"{base}/{name[2:]}" for name in IMPORT_RE.findall(body)]
        response.close()
    modules = {url.rsplit("/", 1)[1] for url in seen if "/js/" in url}
    assert modules == {"app.js", "api.js", "events.js", "tokens.js", "uploads.js", "media.js", "etl.js"}


def test_the_vendored_tus_client_keeps_its_licence_and_version() -> None:
    from pathlib import Path

    vendor = Path(__file__).resolve().parents[2] / "flaskstream" / "static" / "vendor" / "tus-js-client"
    assert "MIT License" in (vendor / "LICENSE").read_text()
    readme = (vendor / "README.md").read_text()
    version = re.search(r"\*\*(\d+\.\d+\.\d+)\*\*", readme)
    assert version and version.group(1) == "4.3.1"
    import hashlib

    digest = hashlib.sha256((vendor / "tus.min.js").read_bytes()).hexdigest()
    assert digest in readme  # the file is the npm tarball's, unmodified


@pytest.mark.parametrize("token, expected", [(None, "false"), ("s3cret", "true")])
def test_the_page_says_whether_writes_need_a_token(
        app_config: dict[str, Any], token: str | None, expected: str) -> None:
    app: Flask = create_app({**app_config, "API_TOKEN": token})
    try:
        html = app.test_client().get("/").get_data(as_text=True)
    finally:
        db.get_database(app).close_all()
    assert f'data-auth-required="{expected}"' in html
    if token:
        assert token not in html  # the flag, never the token itself
