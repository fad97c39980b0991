"""A stand-in for an upstream language model: deterministic answer tokens.

The token route exists to show the streaming shape (a generator that yields as
the answer is produced and stops when the client leaves), so the "model" is a
pure function: the same prompt always gives the same words, which tests can
compare against.
"""

from __future__ import annotations

import re

_ANSWER = (
    "Streaming lets a server send each part of an answer as soon as it exists, "
    "so the reader sees the first words at once instead of waiting for the whole "
    "reply. A generator yields every token, the WSGI server writes it to the socket, "
    "and when the client goes away the next write fails and the work stops."
)


def answer_tokens(prompt: str, max_tokens: int = 200) -> list[str]:
    """Whitespace-led words of the answer to ``prompt`` (first token has no space)."""
    prompt = " ".join(prompt.split())[:500] or "nothing"
    words = [*f"You asked: {prompt}.".split(), *_ANSWER.split()]
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
    return tokens[: max(0, max_tokens)]


def is_sse_accept(accept: str) -> bool:
    """True when ``Accept`` asks for ``text/event-stream`` (with any parameters)."""
    return any(re.match(r"\s*text/event-stream\s*(;|$)", part, re.I)
               for part in accept.split(","))
