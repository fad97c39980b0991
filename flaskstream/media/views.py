"""HTTP routes of the media pattern."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("media", __name__)
