"""The only modules that touch another package's private names.

One module per dependency (``gunicorn``, ``pg8000``, ``pgserver``, ``werkzeug``). Each
offers small named capabilities, checks at start-up that each still holds on the
installed version, logs once and falls back to the public path when one does not.
Contract tests in ``tests/adapters/`` pin every assumption, so a version bump fails
there first, by name.
"""
