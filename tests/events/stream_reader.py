"""Reading SSE responses from Flask's test client without hanging on endless streams."""

from __future__ import annotations

import time
from typing import Any

from flask.testing import FlaskClient

from tests.events.sse_parser import Dispatched, parse


class Stream:
    """Read an endless SSE response from the test client until enough arrived."""

    def __init__(self, client: FlaskClient, url: str, **kwargs: Any) -> None:
        self.response = client.get(url, buffered=False, **kwargs)
        self.it = iter(self.response.response)
        self.body = b""

    def read(self, n: int, timeout: float = 10.0) -> list[Dispatched]:
        deadline = time.monotonic() + timeout
        while len(parse(self.body).events) < n and time.monotonic() < deadline:
            try:
                self.body += next(self.it)
            except StopIteration:
                break
        return parse(self.body).events

    def head(self) -> bytes:
        """The opening chunk (retry hint, id, worker comment)."""
        self.body += next(self.it)
        return self.body

    def rest(self) -> bytes:
        """Everything until the stream ends by itself."""
        for chunk in self.it:
            self.body += chunk
        return self.body

    def close(self) -> None:
        self.response.close()


def ends_by_itself(client: FlaskClient, url: str, timeout: float = 5.0, **kwargs: Any) -> Any:
    """GET a response that must end on its own; fail (not hang) if it streams on."""
    response = client.get(url, buffered=False, **kwargs)
    body, deadline = b"", time.monotonic() + timeout
    try:
        for chunk in response.response:
            body += chunk
            assert time.monotonic() < deadline, f"{url} kept streaming: {body[:200]!r}"
    finally:
        response.close()
    response.body = body
    return response
