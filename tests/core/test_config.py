"""Configuration layering: defaults → FLASKSTREAM_* environment → test_config; gunicorn's env overrides."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from flaskstream import create_app
from flaskstream.db import connect_kwargs


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SSE_HEARTBEAT"] == 15
    assert app.config["DATABASE_URL"] is None
    assert app.config["UPLOAD_DIR"] == str(tmp_path / "uploads")
    assert Path(app.config["MEDIA_DIR"]).name == "media"


def test_environment_overrides_defaults_and_test_config_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASKSTREAM_SSE_HEARTBEAT", "5")
    monkeypatch.setenv("FLASKSTREAM_API_TOKEN", "s3cret")
    monkeypatch.setenv("FLASKSTREAM_LIMIT_FILE_SIZE", "1024")
    app = create_app({"INSTANCE_PATH": str(tmp_path), "LIMIT_FILE_SIZE": 2048})
    assert app.config["SSE_HEARTBEAT"] == 5
    assert app.config["API_TOKEN"] == "s3cret"
    assert app.config["LIMIT_FILE_SIZE"] == 2048


def test_database_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db.example:6543/x")
    assert create_app({"INSTANCE_PATH": str(tmp_path)}).config["DATABASE_URL"].endswith("/x")
    monkeypatch.setenv("FLASKSTREAM_DATABASE_URL", "postgresql://u@/y?host=/run/pg")
    assert create_app({"INSTANCE_PATH": str(tmp_path)}).config["DATABASE_URL"].endswith("/run/pg")


def test_instance_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASKSTREAM_INSTANCE_PATH", str(tmp_path / "inst"))
    app = create_app()
    assert app.instance_path == str(tmp_path / "inst")
    assert (tmp_path / "inst" / "uploads").is_dir()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://alice:pw%40x@db:6543/app",
         {"user": "alice", "password": "pw@x", "host": "db", "port": 6543, "database": "app"}),
        ("postgres://bob@localhost/app", {"user": "bob", "host": "localhost", "port": 5432,
                                          "database": "app"}),
        ("postgresql://postgres:@/postgres?host=/tmp/pg",
         {"user": "postgres", "database": "postgres", "unix_sock": "/tmp/pg/.s.PGSQL.5432"}),
        ("postgresql:///db?host=%2Fvar%2Frun&port=5433",
         {"user": "postgres", "database": "db", "unix_sock": "/var/run/.s.PGSQL.5433"}),
    ],
)
def test_connect_kwargs(url: str, expected: dict[str, object]) -> None:
    assert connect_kwargs(url) == expected


def test_connect_kwargs_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="postgresql"):
        connect_kwargs("mysql://x@y/z")


def test_ensure_schema_without_a_connection_does_not_deadlock(app) -> None:  # noqa: ANN001
    from flaskstream import db

    database = db.get_database(app)
    database._schema_ready = False
    database.ensure_schema()  # used to re-enter its own lock through the pool
    assert database._schema_ready
    with database.connection() as con:
        assert con.run("SELECT value FROM flaskstream.flaskstream_meta WHERE key = 'schema'") == [["1"]]


def _gunicorn_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, object]:
    for name in ("GUNICORN_BIND", "HOST", "PORT", "WEB_CONCURRENCY", "GUNICORN_WORKER_CONNECTIONS",
                 "GUNICORN_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT", "GUNICORN_KEEPALIVE",
                 "GUNICORN_ACCESSLOG", "GUNICORN_LOGLEVEL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(Path(__file__).parents[2] / "conf" / "gunicorn.conf.py"))


def test_gunicorn_defaults_suit_long_lived_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _gunicorn_settings(monkeypatch)
    assert conf["worker_class"] == "gevent"
    assert (conf["bind"], conf["workers"], conf["accesslog"]) == ("127.0.0.1:8000", 2, "-")
    assert conf["worker_connections"] >= 1000  # type: ignore[operator]
    assert conf["graceful_timeout"] < conf["timeout"]  # type: ignore[operator]


def test_gunicorn_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _gunicorn_settings(
        monkeypatch, HOST="0.0.0.0", PORT="9123", WEB_CONCURRENCY="5",
        GUNICORN_WORKER_CONNECTIONS="77", GUNICORN_TIMEOUT="61", GUNICORN_GRACEFUL_TIMEOUT="7",
        GUNICORN_KEEPALIVE="3", GUNICORN_ACCESSLOG="", GUNICORN_LOGLEVEL="debug")
    assert (conf["bind"], conf["workers"], conf["worker_connections"]) == ("0.0.0.0:9123", 5, 77)
    assert (conf["timeout"], conf["graceful_timeout"], conf["keepalive"]) == (61, 7, 3)
    assert (conf["accesslog"], conf["loglevel"]) == (None, "debug")
    assert _gunicorn_settings(monkeypatch, GUNICORN_BIND="unix:/tmp/fs.sock", PORT="1")["bind"] \
        == "unix:/tmp/fs.sock"
