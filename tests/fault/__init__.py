"""Fault suite: workers and the database killed mid-request; nothing partial survives, service recovers."""
