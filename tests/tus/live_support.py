"""Shared by the live tus tests: the token, the tus headers, tuspy and request helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from tusclient import client as tus_client

from tests.live import LiveServer

TOKEN = "tus-live-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TUS = {"Tus-Resumable": "1.0.0", **AUTH}
OCTETS = "application/offset+octet-stream"
MiB = 1 << 20


def uploader(base: str, path: Path, **kwargs: Any) -> Any:
    client = tus_client.TusClient(base + "/uploads/tus/", headers=dict(AUTH))
    return client.uploader(file_path=str(path), metadata={"filename": path.name,
                                                         "filetype": "application/octet-stream"},
                           **kwargs)


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def head(server: LiveServer, uid: str) -> requests.Response:
    return requests.head(f"{server.url}/uploads/tus/{uid}", headers=TUS, timeout=30)


def stored(server: LiveServer, uid: str) -> dict[str, Any]:
    response = requests.get(f"{server.url}/uploads/{uid}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()
