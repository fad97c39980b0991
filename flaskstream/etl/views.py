"""HTTP routes of the etl pattern."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("etl", __name__)
