"""The events pattern (see README)."""
