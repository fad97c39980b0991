"""Hostile-input suite: each finding of the hardening issue as a live regression test, plus a fuzz test."""
