"""``flask db upgrade`` and ``flask db status``: the migrations of ``DB_SCHEMA``.

Both use a connection of their own that applies nothing by itself (the pool's
first connection would migrate as a side effect, which ``status`` must not).
``upgrade`` takes the same advisory lock as a starting worker, so it is safe to
run beside a live server.
"""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from flaskstream import db, migrate

group = AppGroup("db", help="flaskstream's schema (DB_SCHEMA) and its migrations.")


def _fail(exc: BaseException) -> click.ClickException:
    return click.ClickException(f"database: {migrate.server_message(exc)}")


@group.command("upgrade")
@with_appcontext
def upgrade_command() -> None:
    """Apply the pending migrations in order (also done at each process's first connection)."""
    database = db.get_database()
    try:
        con = database.raw_connection()
    except (db.InterfaceError, OSError) as exc:
        raise _fail(exc) from None
    try:
        ran = migrate.upgrade(con, database.names)
    except (migrate.MigrationError, db.DatabaseError, db.InterfaceError) as exc:
        raise _fail(exc) from None
    finally:
        db.close_quietly(con)
    for migration in ran:
        click.echo(f"applied {migration.label}")
    click.echo(f"schema {database.names.schema} is current"
               + ("" if ran else " (nothing to apply)"))


@group.command("status")
@with_appcontext
def status_command() -> None:
    """List every migration as applied (with when) or pending; exit 1 if any is pending."""
    database = db.get_database()
    try:
        con = database.raw_connection()
        try:
            rows = migrate.status(con, database.names)
        finally:
            db.close_quietly(con)
    except (db.DatabaseError, db.InterfaceError, OSError) as exc:
        raise _fail(exc) from None
    click.echo(f"schema {database.names.schema}")
    for migration, applied_at in rows:
        state = f"applied  {applied_at.isoformat(timespec='seconds')}" if applied_at else "pending"
        click.echo(f"{migration.label:<40} {state}")
    if any(at is None for _, at in rows):
        raise SystemExit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(group)
