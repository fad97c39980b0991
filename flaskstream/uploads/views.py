"""HTTP routes of the uploads pattern."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("uploads", __name__)
