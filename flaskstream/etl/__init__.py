"""The etl pattern (see README)."""
