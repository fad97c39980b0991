"""The media pattern (see README)."""
