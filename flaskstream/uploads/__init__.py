"""The uploads pattern (see README)."""
